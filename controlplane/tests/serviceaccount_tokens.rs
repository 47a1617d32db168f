//! Service-account tokens against the real API server (in-process, loopback, SQLite): the
//! TokenRequest subresource, bearer authentication with the tokens it issues (and legacy
//! secret-based ones), TokenReview, ServiceAccount admission of pods, and the root CA publisher.

mod support;
use support::Cluster;

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use oxlet_controlplane::apiserver::serviceaccount_token::keys::{self, SigningKey};
use oxlet_controlplane::controllers::ControllerOptions;
use serde_json::{json, Value};

/// Generous: the suite runs beside others on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    Ok(serde_json::from_value(v)?)
}

async fn start(loops: &[&'static str]) -> Result<Cluster> {
    support::start(loops, ControllerOptions::default()).await
}

/// Creates namespace `name` and, unless the serviceaccount loop is off (`wait_default`
/// false), waits for its `default` ServiceAccount.
async fn namespace(client: &kube::Client, name: &str, wait_default: bool) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    if wait_default {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        tokio::time::timeout(
            WAIT,
            await_condition(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
        )
        .await
        .with_context(|| format!("default ServiceAccount in {name} never appeared"))??;
    }
    Ok(())
}

fn pod_json(name: &str, sa: Option<&str>) -> Value {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    if let Some(sa) = sa {
        p["spec"]["serviceAccountName"] = json!(sa);
    }
    p
}

async fn create_pod(client: &kube::Client, ns: &str, pod: Value) -> Result<Pod> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &from_json(pod)?)
        .await?)
}

async fn create_sa(client: &kube::Client, ns: &str, sa: Value) -> Result<ServiceAccount> {
    Ok(Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &from_json(sa)?)
        .await?)
}

/// POSTs a TokenRequest for `ns/sa` with `spec`.
async fn request_token(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    spec: Value,
) -> kube::Result<TokenRequest> {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", sa, &PostParams::default(), &body)
        .await
}

fn token_of(tr: &TokenRequest) -> Result<String> {
    tr.status
        .as_ref()
        .map(|s| s.token.clone())
        .filter(|t| !t.is_empty())
        .context("TokenRequest has no status.token")
}

fn claims_of(token: &str) -> Result<Value> {
    Ok(keys::decode_unverified(token)
        .context("token is not a JWT")?
        .1)
}

fn api_code(res: kube::Result<impl std::fmt::Debug>) -> Result<(u16, String)> {
    match res {
        Err(kube::Error::Api(s)) => Ok((s.code, s.message)),
        other => bail!("want an API error, got {other:?}"),
    }
}

/// A client of the same server authenticating only with `token`.
async fn token_client(cluster: &Cluster, token: &str) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(cluster.data_dir.join("controller-manager.kubeconfig"))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.auth_info = AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Ok(kube::Client::try_from(config)?)
}

/// The HTTP status of `GET /api/v1/namespaces/default` with `token`.
async fn get_status(cluster: &Cluster, token: &str) -> Result<u16> {
    let client = token_client(cluster, token).await?;
    match Api::<Namespace>::all(client).get("default").await {
        Ok(_) => Ok(200),
        Err(kube::Error::Api(s)) => Ok(s.code),
        Err(e) => bail!("GET with token failed without a status: {e}"),
    }
}

async fn review(client: &kube::Client, token: &str, audiences: &[&str]) -> Result<Value> {
    let mut spec = json!({"token": token});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let tr: TokenReview = from_json(json!({"spec": spec}))?;
    let out = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &tr)
        .await?;
    serde_json::to_value(out.status).context("encode status")
}

fn sa_key(cluster: &Cluster) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(cluster.data_dir.join("pki/sa.key"))?;
    Ok(SigningKey::from_pem(&pem)?)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn token_request_issues_bound_tokens_that_authenticate() -> Result<()> {
    let cluster = start(&["serviceaccount"]).await?;
    let c = &cluster.client;
    namespace(c, "tok", true).await?;
    let robot = create_sa(c, "tok", json!({"metadata": {"name": "robot"}})).await?;
    let node: Node = Api::<Node>::all(c.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "n1"}}))?,
        )
        .await?;
    let mut p = pod_json("web", Some("robot"));
    p["spec"]["nodeName"] = json!("n1");
    let pod = create_pod(c, "tok", p).await?;

    // Unbound, defaults: the API audience, an hour.
    let before = now();
    let tr = request_token(c, "tok", "robot", json!({})).await?;
    let spec = &tr.spec;
    assert_eq!(spec.audiences, vec![ISSUER.to_string()]);
    assert_eq!(spec.expiration_seconds, Some(3600));
    assert_eq!(tr.metadata.name.as_deref(), Some("robot"));
    let token = token_of(&tr)?;
    let claims = claims_of(&token)?;
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "system:serviceaccount:tok:robot");
    assert_eq!(claims["aud"], ISSUER);
    let exp = claims["exp"].as_i64().context("exp")?;
    assert!((before + 3600..=now() + 3600).contains(&exp), "exp {exp}");
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": "tok", "serviceaccount": {"name": "robot", "uid": robot.uid()}})
    );
    let expiry = tr
        .status
        .as_ref()
        .context("status")?
        .expiration_timestamp
        .0
        .as_second();
    assert!((before + 3600..=now() + 3600).contains(&expiry), "{expiry}");

    // The token works as a bearer token, for any request (no RBAC yet).
    let as_robot = token_client(&cluster, &token).await?;
    let pods = Api::<Pod>::namespaced(as_robot.clone(), "tok")
        .list(&Default::default())
        .await?;
    assert_eq!(pods.items.len(), 1);

    // Bound to the pod: the claims and the user carry the pod and its node.
    let bound = request_token(
        c,
        "tok",
        "robot",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": pod.uid()}}),
    )
    .await?;
    let bound_token = token_of(&bound)?;
    let claims = claims_of(&bound_token)?;
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": pod.uid()})
    );
    assert_eq!(
        claims["kubernetes.io"]["node"],
        json!({"name": "n1", "uid": node.uid()})
    );
    let as_pod = token_client(&cluster, &bound_token).await?;
    let ssr: SelfSubjectReview = Api::<SelfSubjectReview>::all(as_pod)
        .create(&PostParams::default(), &from_json(json!({}))?)
        .await?;
    let user = ssr.status.and_then(|s| s.user_info).context("userInfo")?;
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:tok:robot")
    );
    assert_eq!(user.uid, robot.uid());
    assert_eq!(
        user.groups.unwrap_or_default(),
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:tok",
            "system:authenticated"
        ]
    );
    let extra = user.extra.unwrap_or_default();
    let one = |k: &str| extra.get(k).cloned().unwrap_or_default();
    assert_eq!(one("authentication.kubernetes.io/pod-name"), vec!["web"]);
    assert_eq!(
        one("authentication.kubernetes.io/pod-uid"),
        vec![pod.uid().unwrap_or_default()]
    );
    assert_eq!(one("authentication.kubernetes.io/node-name"), vec!["n1"]);
    assert_eq!(
        one("authentication.kubernetes.io/node-uid"),
        vec![node.uid().unwrap_or_default()]
    );
    let jti = claims["jti"].as_str().unwrap_or_default();
    assert_eq!(
        one("authentication.kubernetes.io/credential-id"),
        vec![format!("JTI={jti}")]
    );

    // TokenReview agrees, with the audiences.
    let st = review(c, &bound_token, &[]).await?;
    assert_eq!(st["authenticated"], true, "{st}");
    assert_eq!(st["audiences"], json!([ISSUER]));
    assert_eq!(st["user"]["username"], "system:serviceaccount:tok:robot");
    assert_eq!(
        st["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );

    // The kube-api-access volume's request (3607 s, pod-bound) is extended to a year with
    // warnafter at the requested hour; the reported expiry stays the requested one.
    let before = now();
    let long = request_token(
        c,
        "tok",
        "robot",
        json!({"expirationSeconds": 3607, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}),
    )
    .await?;
    let claims = claims_of(&token_of(&long)?)?;
    let (exp, iat) = (
        claims["exp"].as_i64().unwrap_or_default(),
        claims["iat"].as_i64().unwrap_or_default(),
    );
    assert_eq!(exp - iat, 365 * 24 * 3600, "{claims}");
    assert_eq!(
        claims["kubernetes.io"]["warnafter"].as_i64(),
        Some(iat + 3607)
    );
    let expiry = long
        .status
        .as_ref()
        .context("status")?
        .expiration_timestamp
        .0
        .as_second();
    assert!((before + 3607..=now() + 3607).contains(&expiry));

    // Deleting the pod invalidates the tokens bound to it, and only those.
    Api::<Pod>::namespaced(c.clone(), "tok")
        .delete(
            "web",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "tok");
    tokio::time::timeout(
        WAIT,
        await_condition(pods, "web", |p: Option<&Pod>| p.is_none()),
    )
    .await
    .context("pod web was not deleted")??;
    assert_eq!(get_status(&cluster, &bound_token).await?, 401);
    let st = review(c, &bound_token, &[]).await?;
    assert!(st.get("authenticated").is_none(), "{st}");
    assert_eq!(st["error"], "service account token has been invalidated");
    assert_eq!(get_status(&cluster, &token).await?, 200);

    // Deleting the service account invalidates every token of it.
    Api::<ServiceAccount>::namespaced(c.clone(), "tok")
        .delete("robot", &DeleteParams::default())
        .await?;
    assert_eq!(get_status(&cluster, &token).await?, 401);
    Ok(())
}

#[tokio::test]
async fn token_request_rejects_bad_requests_like_upstream() -> Result<()> {
    let cluster = start(&["serviceaccount"]).await?;
    let c = &cluster.client;
    namespace(c, "bad", true).await?;
    create_sa(c, "bad", json!({"metadata": {"name": "robot"}})).await?;
    create_pod(c, "bad", pod_json("web", Some("robot"))).await?;
    create_pod(c, "bad", pod_json("other", None)).await?;

    let (code, msg) = api_code(request_token(c, "bad", "ghost", json!({})).await)?;
    assert_eq!(
        (code, msg.as_str()),
        (404, "serviceaccounts \"ghost\" not found")
    );

    let (code, msg) =
        api_code(request_token(c, "bad", "robot", json!({"expirationSeconds": 599})).await)?;
    assert_eq!(code, 422);
    assert!(msg.contains("spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"), "{msg}");

    let pod_ref = |name: &str, uid: Option<&str>| {
        let mut r = json!({"kind": "Pod", "apiVersion": "v1", "name": name});
        if let Some(u) = uid {
            r["uid"] = json!(u);
        }
        json!({"boundObjectRef": r})
    };
    let (code, msg) = api_code(request_token(c, "bad", "robot", pod_ref("missing", None)).await)?;
    assert_eq!((code, msg.as_str()), (404, "pods \"missing\" not found"));
    let (code, msg) =
        api_code(request_token(c, "bad", "robot", pod_ref("web", Some("not-the-uid"))).await)?;
    assert_eq!(code, 409, "{msg}");
    assert!(
        msg.contains("the UID in the bound object reference (not-the-uid) does not match"),
        "{msg}"
    );
    let (code, msg) = api_code(request_token(c, "bad", "robot", pod_ref("other", None)).await)?;
    assert_eq!(code, 400, "{msg}");
    assert!(
        msg.contains("pod running with different serviceaccount name"),
        "{msg}"
    );
    let (code, msg) = api_code(
        request_token(
            c,
            "bad",
            "robot",
            json!({"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "d"}}),
        )
        .await,
    )?;
    assert_eq!(code, 400, "{msg}");
    assert!(
        msg.contains("to object of type \"apps/v1, Kind=Deployment\""),
        "{msg}"
    );

    // A body naming another service account.
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": "else"}, "spec": {}});
    let res: kube::Result<TokenRequest> = Api::<ServiceAccount>::namespaced(c.clone(), "bad")
        .create_subresource("token", "robot", &PostParams::default(), &body)
        .await;
    let (code, msg) = api_code(res)?;
    assert_eq!(code, 422);
    assert!(msg.contains("metadata.name: Invalid value: \"else\": must match the service account name if specified"), "{msg}");

    // Bound to a secret: works while the secret exists.
    let secret: Secret = Api::<Secret>::namespaced(c.clone(), "bad")
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "s"}}))?,
        )
        .await?;
    let tr = request_token(
        c,
        "bad",
        "robot",
        json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"}}),
    )
    .await?;
    let token = token_of(&tr)?;
    assert_eq!(
        claims_of(&token)?["kubernetes.io"]["secret"],
        json!({"name": "s", "uid": secret.uid()})
    );
    assert_eq!(get_status(&cluster, &token).await?, 200);
    Api::<Secret>::namespaced(c.clone(), "bad")
        .delete("s", &DeleteParams::default())
        .await?;
    assert_eq!(get_status(&cluster, &token).await?, 401);
    Ok(())
}

#[tokio::test]
async fn expired_forged_foreign_and_legacy_tokens() -> Result<()> {
    let cluster = start(&["serviceaccount"]).await?;
    let c = &cluster.client;
    namespace(c, "auth", true).await?;
    let robot = create_sa(c, "auth", json!({"metadata": {"name": "robot"}})).await?;
    let key = sa_key(&cluster)?;
    let claims = |iat: i64, exp: i64| {
        json!({
            "aud": ISSUER, "exp": exp, "iat": iat, "nbf": iat, "iss": ISSUER,
            "kubernetes.io": {"namespace": "auth", "serviceaccount": {"name": "robot", "uid": robot.uid()}},
            "sub": "system:serviceaccount:auth:robot",
        })
    };

    // A token signed with the server's key by hand is as good as an issued one...
    let t = now();
    let good = key.sign_jwt(&claims(t, t + 600))?;
    assert_eq!(get_status(&cluster, &good).await?, 200);
    // ...until it expires (a minute of leeway).
    let expired = key.sign_jwt(&claims(t - 7200, t - 3600))?;
    assert_eq!(get_status(&cluster, &expired).await?, 401);
    let st = review(c, &expired, &[]).await?;
    assert_eq!(st["error"], "service account token has expired", "{st}");
    let future = key.sign_jwt(&claims(t + 3600, t + 7200))?;
    assert_eq!(get_status(&cluster, &future).await?, 401);

    // Signed by another key.
    let other = SigningKey::from_pem(&rcgen::KeyPair::generate()?.serialize_pem())?;
    let forged = other.sign_jwt(&claims(t, t + 600))?;
    assert_eq!(get_status(&cluster, &forged).await?, 401);
    assert_eq!(
        review(c, &forged, &[]).await?["error"],
        "token signature is invalid"
    );

    // Another service account's UID (the account was recreated).
    let mut stale = claims(t, t + 600);
    stale["kubernetes.io"]["serviceaccount"]["uid"] = json!("an-old-uid");
    assert_eq!(get_status(&cluster, &key.sign_jwt(&stale)?).await?, 401);

    // Meant for another audience: not for this API server, but TokenReview for that audience
    // accepts it.
    let vault =
        token_of(&request_token(c, "auth", "robot", json!({"audiences": ["vault"]})).await?)?;
    assert_eq!(claims_of(&vault)?["aud"], "vault");
    assert_eq!(get_status(&cluster, &vault).await?, 401);
    let st = review(c, &vault, &[]).await?;
    assert_eq!(
        st["error"],
        format!("token audiences [\"vault\"] is invalid for the target audiences [\"{ISSUER}\"]")
    );
    let st = review(c, &vault, &["vault", "other"]).await?;
    assert_eq!(st["authenticated"], true, "{st}");
    assert_eq!(st["audiences"], json!(["vault"]));

    // Not a token of ours at all.
    assert_eq!(get_status(&cluster, "not-a-jwt").await?, 401);
    assert_eq!(
        review(c, "not-a-jwt", &[]).await?["error"],
        "invalid bearer token"
    );
    let (code, _) = api_code(
        Api::<TokenReview>::all(c.clone())
            .create(&PostParams::default(), &from_json(json!({"spec": {}}))?)
            .await,
    )?;
    assert_eq!(code, 400);

    // Legacy secret-based token: valid while its secret holds it.
    let legacy = key.sign_jwt(&json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "auth",
        "kubernetes.io/serviceaccount/secret.name": "robot-token",
        "kubernetes.io/serviceaccount/service-account.name": "robot",
        "kubernetes.io/serviceaccount/service-account.uid": robot.uid(),
        "sub": "system:serviceaccount:auth:robot",
    }))?;
    assert_eq!(get_status(&cluster, &legacy).await?, 401, "no secret yet");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "auth");
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
                "type": "kubernetes.io/service-account-token",
                "stringData": {"token": legacy},
            }))?,
        )
        .await?;
    assert_eq!(get_status(&cluster, &legacy).await?, 200);
    let st = review(c, &legacy, &[]).await?;
    assert_eq!(
        st["user"]["username"], "system:serviceaccount:auth:robot",
        "{st}"
    );
    secrets
        .delete("robot-token", &DeleteParams::default())
        .await?;
    assert_eq!(get_status(&cluster, &legacy).await?, 401);
    Ok(())
}

#[tokio::test]
async fn pod_admission_mounts_the_api_access_volume() -> Result<()> {
    let cluster = start(&["serviceaccount"]).await?;
    let c = &cluster.client;
    namespace(c, "adm", true).await?;
    let mut p = pod_json("web", None);
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    p["spec"]["containers"] = json!([
        {"name": "a", "image": "busybox"},
        {"name": "b", "image": "busybox", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
    ]);
    p["spec"]["volumes"] = json!([{"name": "own", "emptyDir": {}}]);
    let pod = serde_json::to_value(create_pod(c, "adm", p).await?)?;
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    let vol = spec["volumes"][1].clone();
    let vol_name = vol["name"].as_str().context("volume name")?.to_string();
    assert!(
        vol_name.starts_with("kube-api-access-") && vol_name.len() == "kube-api-access-".len() + 5,
        "{vol_name}"
    );
    assert_eq!(
        vol["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]})
    );
    let mount = json!({"name": vol_name, "mountPath": MOUNT_PATH, "readOnly": true});
    assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(
        spec["containers"][1]["volumeMounts"],
        json!([{"name": "own", "mountPath": MOUNT_PATH}])
    );

    // Opting out on the pod, or on its service account.
    let mut p = pod_json("no-mount", None);
    p["spec"]["automountServiceAccountToken"] = json!(false);
    let pod = create_pod(c, "adm", p).await?;
    let spec = pod.spec.context("spec")?;
    assert!(spec.volumes.unwrap_or_default().is_empty());
    assert!(spec.containers[0]
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .is_empty());
    create_sa(
        c,
        "adm",
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false}),
    )
    .await?;
    let pod = create_pod(c, "adm", pod_json("quiet-pod", Some("quiet"))).await?;
    assert!(pod
        .spec
        .context("spec")?
        .volumes
        .unwrap_or_default()
        .is_empty());

    // A service account that does not exist.
    let res = Api::<Pod>::namespaced(c.clone(), "adm")
        .create(
            &PostParams::default(),
            &from_json(pod_json("ghost-pod", Some("ghost")))?,
        )
        .await;
    let (code, msg) = api_code(res)?;
    assert_eq!(code, 403);
    assert_eq!(msg, "pods \"ghost-pod\" is forbidden: error looking up service account adm/ghost: serviceaccount \"ghost\" not found");

    // Mirror pods are left alone, and may not name a service account.
    let mut p = pod_json("static-web-n1", None);
    p["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    let pod = create_pod(c, "adm", p.clone()).await?;
    let spec = pod.spec.context("spec")?;
    assert_eq!(spec.service_account_name, None);
    assert!(spec.volumes.unwrap_or_default().is_empty());
    p["metadata"]["name"] = json!("static-sa-n1");
    p["spec"]["serviceAccountName"] = json!("default");
    let res = Api::<Pod>::namespaced(c.clone(), "adm")
        .create(&PostParams::default(), &from_json(p)?)
        .await;
    let (code, msg) = api_code(res)?;
    assert_eq!(
        (code, msg.as_str()),
        (
            403,
            "pods \"static-sa-n1\" is forbidden: a mirror pod may not reference service accounts"
        )
    );
    Ok(())
}

#[tokio::test]
async fn pods_wait_briefly_for_the_default_service_account() -> Result<()> {
    // No serviceaccount loop: nothing creates `default`.
    let cluster = start(&[]).await?;
    let c = &cluster.client;
    namespace(c, "empty", false).await?;
    let res = Api::<Pod>::namespaced(c.clone(), "empty")
        .create(&PostParams::default(), &from_json(pod_json("p", None))?)
        .await;
    let (code, msg) = api_code(res)?;
    assert_eq!(code, 403);
    assert_eq!(msg, "pods \"p\" is forbidden: error looking up service account empty/default: serviceaccount \"default\" not found");

    // A create racing the account's creation is admitted once it appears.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "empty");
    let pending = tokio::spawn(async move {
        pods.create(
            &PostParams::default(),
            &from_json::<Pod>(pod_json("q", None))?,
        )
        .await
        .map_err(anyhow::Error::from)
    });
    create_sa(c, "empty", json!({"metadata": {"name": "default"}})).await?;
    let pod = pending.await??;
    assert_eq!(
        pod.spec.and_then(|s| s.service_account_name).as_deref(),
        Some("default")
    );
    Ok(())
}

#[tokio::test]
async fn root_ca_configmap_is_published_and_restored() -> Result<()> {
    let cluster = start(&["rootcacertpublisher"]).await?;
    let c = &cluster.client;
    let ca = std::fs::read_to_string(cluster.data_dir.join("pki/ca.crt"))?;
    namespace(c, "ca", false).await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "ca");
    let published = |ca: String| {
        move |cm: Option<&ConfigMap>| {
            cm.and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get("ca.crt"))
                == Some(&ca)
        }
    };
    let wait = |what: &'static str| {
        let cms = cms.clone();
        let cond = published(ca.clone());
        async move {
            tokio::time::timeout(WAIT, await_condition(cms, "kube-root-ca.crt", cond))
                .await
                .with_context(|| format!("kube-root-ca.crt {what}"))?
                .map_err(anyhow::Error::from)
        }
    };
    let first = wait("never published").await?.context("configmap")?;
    let desc = first
        .annotations()
        .get("kubernetes.io/description")
        .cloned()
        .unwrap_or_default();
    assert!(desc.starts_with("Contains a CA bundle"), "{desc}");
    // Also in the namespaces that existed before the loop started.
    let kube_system: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    tokio::time::timeout(
        WAIT,
        await_condition(kube_system, "kube-root-ca.crt", published(ca.clone())),
    )
    .await
    .context("kube-system/kube-root-ca.crt")??;

    // Deleted: re-created.
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await?;
    let again = wait("not re-created after deletion")
        .await?
        .context("configmap")?;
    assert_ne!(again.uid(), first.uid());

    // Changed: restored.
    let mut changed = again.clone();
    changed.data = Some([("ca.crt".to_string(), "tampered".to_string())].into());
    cms.replace("kube-root-ca.crt", &PostParams::default(), &changed)
        .await?;
    let restored = wait("not restored after a change")
        .await?
        .context("configmap")?;
    assert_eq!(restored.uid(), again.uid());
    Ok(())
}
