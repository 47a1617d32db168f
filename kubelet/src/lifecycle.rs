//! Container lifecycle hooks (postStart, preStop), as upstream pkg/kubelet/lifecycle/handlers.go:
//! exec through CRI ExecSync, httpGet with the probes' HTTP client, sleep; tcpSocket is
//! rejected as upstream does. The error's text is the FailedPostStartHook / FailedPreStopHook
//! event message, worded like upstream's.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use oxlet_cri::Runtime;

use crate::prober::http::{self, HttpGet};

/// Most of a failing hook's response body we put in its message.
const MAX_BODY_IN_MESSAGE: usize = 256;

/// A lifecycle hook that failed. `Display` is the event message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The command failed, exited non-zero or timed out.
    #[error(
        "Exec lifecycle hook ({command}) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}"
    )]
    Exec {
        /// The command, printed as Go prints a string slice (`[sh -c exit 1]`).
        command: String,
        /// The container's name.
        container: String,
        /// The pod as upstream names it in messages (`name_namespace(uid)`).
        pod: String,
        /// What went wrong.
        error: String,
        /// The command's stdout and stderr.
        output: String,
    },
    /// The request failed or answered with a status outside 2xx/3xx.
    #[error(
        "HTTP lifecycle hook ({path}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
    )]
    Http {
        /// The hook's path.
        path: String,
        /// The container's name.
        container: String,
        /// The pod, `name_namespace(uid)`.
        pod: String,
        /// What went wrong.
        error: String,
    },
    /// The sleep did not finish within the hook's time.
    #[error(
        "Sleep lifecycle hook ({seconds}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
    )]
    Sleep {
        /// The requested sleep.
        seconds: i64,
        /// The container's name.
        container: String,
        /// The pod, `name_namespace(uid)`.
        pod: String,
        /// What went wrong.
        error: String,
    },
    /// tcpSocket handlers are deprecated and never run.
    #[error("Cannot run handler: tcpSocket is not supported")]
    TcpSocket,
    /// The handler names no action.
    #[error("Cannot run handler: the handler has no action")]
    NoAction,
}

/// Runs one lifecycle handler for a container, bounded by `timeout` (for preStop, what is left of
/// the grace period).
pub async fn run_handler(
    runtime: &dyn Runtime,
    pod: &Pod,
    container: &Container,
    container_id: &str,
    pod_ip: Option<&str>,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), HookError> {
    let pod_name = format_pod(pod);
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let fail = |error: String, output: String| HookError::Exec {
            command: format!("[{}]", cmd.join(" ")),
            container: container.name.clone(),
            pod: pod_name.clone(),
            error,
            output,
        };
        let timed_out = || format!("command {:?} timed out", cmd.join(" "));
        return match tokio::time::timeout(timeout, runtime.exec_sync(container_id, &cmd, timeout))
            .await
        {
            Err(_) => Err(fail(timed_out(), String::new())),
            Ok(Err(e)) if e.is_timeout() => Err(fail(timed_out(), String::new())),
            Ok(Err(e)) => Err(fail(e.to_string(), String::new())),
            Ok(Ok(resp)) if resp.exit_code == 0 => Ok(()),
            Ok(Ok(resp)) => {
                let stderr = String::from_utf8_lossy(&resp.stderr).into_owned();
                let mut output = String::from_utf8_lossy(&resp.stdout).into_owned();
                output.push_str(&stderr);
                // As the kubelet's remote runtime words a non-zero exit.
                let error = format!(
                    "command '{}' exited with {}: {stderr}",
                    cmd.join(" "),
                    resp.exit_code
                );
                Err(fail(error, output))
            }
        };
    }
    if let Some(action) = &handler.http_get {
        let fail = |error: String| HookError::Http {
            path: action.path.clone().unwrap_or_default(),
            container: container.name.clone(),
            pod: pod_name.clone(),
            error,
        };
        let get =
            HttpGet::from_action(action, container, pod_ip).map_err(|e| fail(e.to_string()))?;
        let resp = http::get(&get, "lifecycle", timeout).await.map_err(fail)?;
        if http::is_ok_status(resp.status) {
            return Ok(());
        }
        let mut body = resp.body_text();
        if body.len() > MAX_BODY_IN_MESSAGE {
            let mut end = MAX_BODY_IN_MESSAGE;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
        }
        return Err(fail(format!(
            "HTTP lifecycle hook failed with statuscode: {}, body: {body:?}",
            resp.status
        )));
    }
    if let Some(sleep) = &handler.sleep {
        let seconds = sleep.seconds;
        let wanted = Duration::from_secs(seconds.max(0).unsigned_abs());
        return match tokio::time::timeout(timeout, tokio::time::sleep(wanted)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(HookError::Sleep {
                seconds,
                container: container.name.clone(),
                pod: pod_name,
                error: "container terminated before sleep hook finished".into(),
            }),
        };
    }
    if handler.tcp_socket.is_some() {
        return Err(HookError::TcpSocket);
    }
    Err(HookError::NoAction)
}

/// `name_namespace(uid)`, upstream's format.Pod.
fn format_pod(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.
mod tests {
    use k8s_openapi::api::core::v1::{
        ExecAction, HTTPGetAction, HTTPHeader, SleepAction, TCPSocketAction,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use oxlet_cri::api::ExecSyncResponse;
    use oxlet_cri::fake::Method;

    use super::*;
    use crate::prober::testutil::{
        closed_port, container, fake_with_container, http_server, https_server, pod,
    };

    const LONG: Duration = Duration::from_secs(10);

    fn exec(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    fn http_get(path: &str, port: u16) -> LifecycleHandler {
        LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exec_hooks() {
        let (fake, id) = fake_with_container().await;
        let c = container(0);
        let p = pod(vec![c.clone()]);
        let handler = exec(&["sh", "-c", "echo hi; exit 3"]);
        let run = || run_handler(fake.as_ref(), &p, &c, &id, None, &handler, LONG);
        assert_eq!(run().await, Ok(()));

        fake.set_exec_response(ExecSyncResponse {
            stdout: b"hi\n".to_vec(),
            stderr: b"oops\n".to_vec(),
            exit_code: 3,
        });
        let err = run().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Exec lifecycle hook ([sh -c echo hi; exit 3]) for Container "app" in Pod "web_default(uid-1)" failed - error: command 'sh -c echo hi; exit 3' exited with 3: oops
, message: "hi\noops\n""#
        );

        fake.fail_next(Method::ExecSync, From::from(4), "deadline"); // DeadlineExceeded
        let err = run().await.unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"error: command "sh -c echo hi; exit 3" timed out"#),
            "{err}"
        );
    }

    #[tokio::test]
    async fn http_hooks() {
        let srv = http_server().await;
        let (fake, id) = fake_with_container().await;
        let c = container(srv.port());
        let p = pod(vec![c.clone()]);
        let ip = Some("127.0.0.1");
        let run = |h: LifecycleHandler| {
            let (fake, c, p, id) = (fake.clone(), c.clone(), p.clone(), id.clone());
            async move { run_handler(fake.as_ref(), &p, &c, &id, ip, &h, LONG).await }
        };

        let mut ok = http_get("/ok", srv.port());
        ok.http_get.as_mut().unwrap().http_headers = Some(vec![HTTPHeader {
            name: "X-Hook".into(),
            value: "poststart".into(),
        }]);
        assert_eq!(run(ok).await, Ok(()));
        let seen = srv.last_headers().unwrap();
        assert_eq!(seen["user-agent"], "kube-lifecycle/1.33");
        assert_eq!(seen["x-hook"], "poststart");
        // Redirects to the same host are followed; named ports resolve.
        let mut named = http_get("/to-ok", 0);
        named.http_get.as_mut().unwrap().port = IntOrString::String("web".into());
        assert_eq!(run(named).await, Ok(()));

        let err = run(http_get("/fail", srv.port())).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"HTTP lifecycle hook (/fail) for Container "app" in Pod "web_default(uid-1)" failed - error: HTTP lifecycle hook failed with statuscode: 500, body: "boom""#
        );
        let closed = closed_port();
        let err = run(http_get("/", closed)).await.unwrap_err();
        assert!(
            err.to_string().ends_with("connect: connection refused"),
            "{err}"
        );

        let tls = https_server().await;
        let mut secure = http_get("/", tls.port());
        secure.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
        assert_eq!(run(secure).await, Ok(()));

        // No host and no pod IP.
        let h = http_get("/ok", srv.port());
        let err = run_handler(fake.as_ref(), &p, &c, &id, None, &h, LONG)
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::Http { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hooks() {
        let (fake, id) = fake_with_container().await;
        let c = container(0);
        let p = pod(vec![c.clone()]);
        let sleep = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 5 }),
            ..Default::default()
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            run_handler(fake.as_ref(), &p, &c, &id, None, &sleep, LONG).await,
            Ok(())
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(5));

        let t0 = tokio::time::Instant::now();
        let err = run_handler(
            fake.as_ref(),
            &p,
            &c,
            &id,
            None,
            &sleep,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            r#"Sleep lifecycle hook (5) for Container "app" in Pod "web_default(uid-1)" failed - error: container terminated before sleep hook finished"#
        );
    }

    #[tokio::test]
    async fn tcp_socket_and_empty_handlers_are_refused() {
        let (fake, id) = fake_with_container().await;
        let c = container(0);
        let p = pod(vec![c.clone()]);
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::Int(80),
            }),
            ..Default::default()
        };
        let err = run_handler(fake.as_ref(), &p, &c, &id, None, &tcp, LONG)
            .await
            .unwrap_err();
        assert_eq!(err, HookError::TcpSocket);
        assert_eq!(
            err.to_string(),
            "Cannot run handler: tcpSocket is not supported"
        );
        let none = LifecycleHandler::default();
        assert_eq!(
            run_handler(fake.as_ref(), &p, &c, &id, None, &none, LONG).await,
            Err(HookError::NoAction)
        );
        // Nothing was executed in the container.
        assert!(!fake.methods().contains(&Method::ExecSync));
    }
}
