//! TLS on `--serve`: `tls://` and `https://` listeners with a certificate from a throwaway CA
//! (made by openssl), used by runmany and curl; a client that trusts another CA is refused;
//! SIGHUP loads a new certificate without a restart; a key others can read, or a missing pair,
//! stops the service before it listens.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use commondb::protocol::listen::{HTTPS, TLS};
use e2e::{Run, Sandbox};

const EXE: &str = "create-user";

fn runmany(sb: &Sandbox, address: &str, ca: &Path, n: &str) -> Run {
    Run::of(
        sb.command(
            "runmany",
            &[
                "-n",
                n,
                "-j",
                "4",
                "--cacert",
                ca.to_str().unwrap(),
                "--serve",
                address,
                EXE,
            ],
        ),
        None,
    )
}

#[test]
fn tls_listeners_serve_reload_on_sighup_and_refuse_what_is_wrong() {
    let Some(openssl) = e2e::tool("openssl", "openssl") else {
        return;
    };
    let mut sb = Sandbox::new();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    e2e::certificates(&openssl, dir, "one", "IP:127.0.0.1,DNS:localhost");
    e2e::certificates(&openssl, dir, "two", "IP:127.0.0.1,DNS:localhost");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(dir.join("one.pem"), &cert).unwrap();
    std::fs::copy(dir.join("one.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // No pair configured: refused before listening, saying what to set.
    sb.run(EXE, &["--serve", "--listen", &format!("{TLS}127.0.0.1:0")])
        .code(78)
        .stderr_has("serve.tls_cert and serve.tls_key");
    sb.set_env("COMMONDB_SERVE__TLS_CERT", cert.to_str().unwrap());
    sb.set_env("COMMONDB_SERVE__TLS_KEY", key.to_str().unwrap());
    // A key others can read is a secret no more.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    sb.run(EXE, &["--serve", "--listen", &format!("{TLS}127.0.0.1:0")])
        .code(77)
        .stderr_has("chmod 600");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let served = sb.serve(
        EXE,
        &[
            "--listen",
            &format!("{TLS}127.0.0.1:0"),
            "--listen",
            &format!("{HTTPS}127.0.0.1:0"),
        ],
    );
    let (tls, https) = (
        format!("{TLS}{}", served.address(TLS)),
        format!("{HTTPS}{}", served.address(HTTPS)),
    );
    let (one, two) = (dir.join("one-ca.pem"), dir.join("two-ca.pem"));
    runmany(&sb, &tls, &one, "300")
        .code(0)
        .stdout_has("succeeded   300   failed 0");
    runmany(&sb, &https, &one, "300")
        .code(0)
        .stdout_has("succeeded   300   failed 0");
    // A client that trusts another CA does not get through.
    runmany(&sb, &tls, &two, "5")
        .code(69)
        .stderr_has("the TLS handshake")
        .stderr_has("invalid peer certificate");
    if let Some(curl) = e2e::tool("curl", "curl") {
        let out = Command::new(curl)
            .args(["-sS", "--cacert"])
            .arg(&one)
            .args(["-X", "POST", &format!("{https}/create"), "-d"])
            .arg(r#"{"username": "curly", "email": "c@example.com"}"#)
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains(r#""ok":true"#), "{body} {out:?}");
    }

    // SIGHUP: the new certificate (another CA's) for new connections, without a restart.
    std::fs::copy(dir.join("two.pem"), &cert).unwrap();
    std::fs::copy(dir.join("two.key"), &key).unwrap();
    e2e::signal(served.pid(), rustix::process::Signal::HUP);
    e2e::wait_for("the reload note", 10, || {
        served
            .stderr()
            .contains("read the TLS certificate and key again")
            .then_some(())
    })
    .unwrap();
    runmany(&sb, &tls, &two, "100")
        .code(0)
        .stdout_has("succeeded   100   failed 0");
    runmany(&sb, &tls, &one, "5")
        .code(69)
        .stderr_has("invalid peer certificate");
    // A pair that does not load leaves the one in use.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    e2e::signal(served.pid(), rustix::process::Signal::HUP);
    e2e::wait_for("the refusal note", 10, || {
        served
            .stderr()
            .contains("could not be read, the old ones stay")
            .then_some(())
    })
    .unwrap();
    runmany(&sb, &https, &two, "100")
        .code(0)
        .stdout_has("succeeded   100   failed 0");
    let (code, said) = served.terminate();
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains("PRIVATE KEY"), "{said}");
    let users = e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users");
    assert_eq!(
        users,
        300 + 300 + 100 + 100 + i64::from(e2e::tool("curl", "curl").is_some())
    );
}

/// Client certificates (`serve.tls_client_ca`) stand for the token: without a token every
/// client must show one the CA signed, and such a service may listen off loopback; with a
/// token, a client shows either. Clear text off loopback stays refused.
#[test]
fn client_certificates_stand_for_the_token() {
    let Some(openssl) = e2e::tool("openssl", "openssl") else {
        return;
    };
    let mut sb = Sandbox::new();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    e2e::certificates(&openssl, dir, "server", "IP:127.0.0.1,DNS:localhost");
    e2e::certificates(&openssl, dir, "client", "DNS:runmany");
    e2e::certificates(&openssl, dir, "stranger", "DNS:runmany");
    for key in ["server.key", "client.key", "stranger.key"] {
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = |name: &str| dir.join(name).display().to_string();
    sb.set_env("COMMONDB_SERVE__TLS_CERT", path("server.pem"));
    sb.set_env("COMMONDB_SERVE__TLS_KEY", path("server.key"));
    sb.set_env("COMMONDB_SERVE__TLS_CLIENT_CA", path("client-ca.pem"));
    sb.run(EXE, &["--serve", "--listen", "tcp://0.0.0.0:0"])
        .code(78)
        .stderr_has("clear text");

    // No token: off loopback, every client shows a certificate.
    let served = sb.serve(
        EXE,
        &[
            "--listen",
            &format!("{TLS}0.0.0.0:0"),
            "--listen",
            &format!("{HTTPS}0.0.0.0:0"),
        ],
    );
    let local = |prefix: &str| {
        let addr = served.address(prefix);
        format!("{prefix}127.0.0.1:{}", addr.rsplit_once(':').unwrap().1)
    };
    let as_client = |address: &str, who: Option<&str>, n: &str| {
        let mut args = vec!["-n", n, "-j", "4", "--cacert"];
        let ca = path("server-ca.pem");
        args.push(&ca);
        let (cert, key) = who.map_or((String::new(), String::new()), |who| {
            (path(&format!("{who}.pem")), path(&format!("{who}.key")))
        });
        if who.is_some() {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        args.extend(["--serve", address, EXE]);
        Run::of(sb.command("runmany", &args), None)
    };
    as_client(&local(TLS), Some("client"), "200")
        .code(0)
        .stdout_has("succeeded   200   failed 0");
    as_client(&local(HTTPS), Some("client"), "200")
        .code(0)
        .stdout_has("succeeded   200   failed 0");
    // No certificate, or one another CA signed: nothing gets through.
    as_client(&local(TLS), None, "5")
        .code(1)
        .stdout_has("failed 5")
        .stdout_has("CertificateRequired");
    as_client(&local(TLS), Some("stranger"), "5")
        .code(1)
        .stdout_has("failed 5");
    // runmany's own key is a secret too.
    std::fs::set_permissions(
        dir.join("client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    as_client(&local(TLS), Some("client"), "5")
        .code(2)
        .stderr_has("chmod 600");
    std::fs::set_permissions(
        dir.join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (code, said) = served.terminate();
    assert_eq!(code, Some(0), "{said}");

    // With a token too: a certificate or the token, either will do.
    let Some(curl) = e2e::tool("curl", "curl") else {
        return;
    };
    let token = "s3cret-token-0123456789";
    let secrets = sb.secrets_dir().join(format!("{EXE}.toml"));
    std::fs::create_dir_all(secrets.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        secrets.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(&secrets, format!("serve_token = \"{token}\"\n")).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let served = sb.serve(EXE, &["--listen", &format!("{HTTPS}127.0.0.1:0")]);
    let url = format!("{HTTPS}{}/create", served.address(HTTPS));
    let post = |name: &str, extra: &[String]| {
        let out = Command::new(&curl)
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(path("server-ca.pem"))
            .args(extra)
            .args(["-X", "POST", &url, "-d"])
            .arg(format!(
                r#"{{"username": "{name}", "email": "{name}@example.com"}}"#
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let with_cert = [
        "--cert".to_string(),
        path("client.pem"),
        "--key".to_string(),
        path("client.key"),
    ];
    let bearer = ["-H".to_string(), format!("Authorization: Bearer {token}")];
    assert_eq!(post("certified", &with_cert), "201");
    assert_eq!(post("bearer", &bearer), "201");
    assert_eq!(post("nobody", &[]), "401");
    let (code, said) = served.terminate();
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        e2e::sqlite_count(&sb.database(EXE), "SELECT COUNT(*) FROM users"),
        200 + 200 + 2
    );
}
