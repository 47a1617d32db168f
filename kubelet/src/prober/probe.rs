//! Running one probe once: exec through CRI ExecSync, httpGet, tcpSocket, grpc (upstream
//! pkg/kubelet/prober/prober.go runProbe and pkg/probe/*).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use oxlet_cri::Runtime;
use tokio::net::TcpStream;

use super::http::{self, authority, dial_error, HttpGet};
use super::{grpc, PortError, ProbeError, ProbeResult, ProbeTiming};

/// Upstream keeps at most this much exec output (pkg/probe/exec maxReadLength).
const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// How long past the probe's timeout we wait for a runtime that does not enforce it itself.
const EXEC_GRACE: Duration = Duration::from_secs(5);

/// Runs `probe` once against the container, within the probe's `timeoutSeconds`.
///
/// `Ok` is the verdict; `Err` means the probe could not be run at all (no handler, an
/// unresolvable port, no pod IP, a runtime error other than a timeout), which upstream reports
/// as an error and does not count against the thresholds.
pub async fn run_probe(
    runtime: &dyn Runtime,
    pod: &Pod,
    container: &Container,
    container_id: &str,
    pod_ip: Option<&str>,
    probe: &Probe,
) -> Result<ProbeResult, ProbeError> {
    let timeout = ProbeTiming::of(probe).timeout;
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return exec_probe(runtime, container_id, &cmd, timeout).await;
    }
    if let Some(action) = &probe.http_get {
        let get = HttpGet::from_action(action, container, pod_ip)?;
        return Ok(http_probe(&get, timeout).await);
    }
    if let Some(action) = &probe.tcp_socket {
        let host = match action.host.as_deref() {
            Some(h) if !h.is_empty() => h,
            _ => pod_ip
                .filter(|ip| !ip.is_empty())
                .ok_or(ProbeError::NoPodIp)?,
        };
        let port = resolve_port(&action.port, container)?;
        return Ok(tcp_probe(host, port, timeout).await);
    }
    if let Some(action) = &probe.grpc {
        let host = pod_ip
            .filter(|ip| !ip.is_empty())
            .ok_or(ProbeError::NoPodIp)?;
        let port = u16::try_from(action.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(PortError::Invalid(i64::from(action.port)))?;
        let service = action.service.as_deref().unwrap_or("");
        return Ok(grpc::probe(host, port, service, timeout).await);
    }
    Err(ProbeError::NoHandler {
        pod: format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
        container: container.name.clone(),
    })
}

/// ExecSync with the probe's timeout: exit 0 passes, other exits fail with the output, a
/// timeout fails with upstream's `command "..." timed out`.
async fn exec_probe(
    runtime: &dyn Runtime,
    container_id: &str,
    cmd: &[String],
    timeout: Duration,
) -> Result<ProbeResult, ProbeError> {
    let timed_out = || ProbeResult::Failure(format!("command {:?} timed out", cmd.join(" ")));
    let call = runtime.exec_sync(container_id, cmd, timeout);
    match tokio::time::timeout(timeout + EXEC_GRACE, call).await {
        Err(_) => Ok(timed_out()),
        Ok(Err(e)) if e.is_timeout() => Ok(timed_out()),
        Ok(Err(e)) => Err(ProbeError::Runtime(e)),
        Ok(Ok(resp)) => {
            if resp.exit_code == 0 {
                return Ok(ProbeResult::Success);
            }
            // As the kubelet's RunInContainer: stdout, then stderr.
            let mut out = resp.stdout;
            out.extend_from_slice(&resp.stderr);
            out.truncate(MAX_EXEC_OUTPUT);
            Ok(ProbeResult::Failure(
                String::from_utf8_lossy(&out).into_owned(),
            ))
        }
    }
}

/// An HTTP probe's verdict as upstream DoHTTPProbe: 2xx passes, a 3xx that was not followed
/// passes with a warning, anything else fails with the status code only (upstream keeps the
/// body out of the message, kubernetes/kubernetes#99425).
pub(crate) async fn http_probe(get: &HttpGet, timeout: Duration) -> ProbeResult {
    match http::get(get, "probe", timeout).await {
        Err(msg) => ProbeResult::Failure(msg),
        Ok(resp) if (200..300).contains(&resp.status) => ProbeResult::Success,
        Ok(resp) if (300..400).contains(&resp.status) => ProbeResult::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            resp.body_text()
        )),
        Ok(resp) => ProbeResult::Failure(format!(
            "HTTP probe failed with statuscode: {}",
            resp.status
        )),
    }
}

/// A TCP connect within the timeout; the connection is closed at once.
async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> ProbeResult {
    let addr = authority(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Err(_) => ProbeResult::Failure(format!("dial tcp {addr}: i/o timeout")),
        Ok(Err(e)) => ProbeResult::Failure(dial_error(&addr, &e)),
        Ok(Ok(_)) => ProbeResult::Success,
    }
}

/// A port given by number or by the name of one of the container's ports, as upstream
/// ResolveContainerPort (a name that is all digits also works as a number).
pub(crate) fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, PortError> {
    let n = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            match (named, name.parse::<i64>()) {
                (Some(p), _) => i64::from(p.container_port),
                (None, Ok(n)) => n,
                (None, Err(_)) => return Err(PortError::NotFound(name.clone())),
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(PortError::Invalid(n))
}
