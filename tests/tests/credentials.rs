//! systemd credentials: with `$CREDENTIALS_DIRECTORY` laid out the way systemd lays it out (a
//! directory only the unit's user can enter, one file per credential, mode 0400), every mode
//! takes its secrets from there, and nothing secret is left in the data or configuration
//! directories.

use std::os::unix::fs::PermissionsExt;

use commondb::protocol::listen::TCP;
use e2e::{Backend, BackendSandbox, on_every_backend};

const EXE: &str = "create-user";

on_every_backend!(every_mode_runs_from_systemd_credentials);

/// Writes credential `name` with `text`, mode 0400, as systemd does.
fn credential(dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
}

fn every_mode_runs_from_systemd_credentials(backend: Backend) {
    let Some(mut sb) = BackendSandbox::new(backend) else {
        return;
    };
    // Setup writes the app secrets file as usual; the operator turns it into a credential
    // (LoadCredential= or systemd-creds encrypt) and removes it from the secrets directory.
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    let creds = tempfile::tempdir().unwrap();
    let app_file = sb.secrets_dir().join(format!("{EXE}.toml"));
    let token = "credential-token-0123456789";
    match std::fs::read_to_string(&app_file) {
        Ok(text) => {
            credential(creds.path(), &format!("{EXE}.toml"), &text);
            std::fs::remove_file(&app_file).unwrap();
        }
        Err(_) => assert_eq!(backend, Backend::Sqlite, "a server's setup writes the file"),
    }
    credential(creds.path(), "serve_token", &format!("{token}\n"));
    if let Some(db) = &sb.server {
        credential(creds.path(), "admin_url", &format!("{}\n", db.admin_url));
    }
    std::fs::set_permissions(creds.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
    let creds_dir = creds.path().to_str().unwrap().to_string();

    // Without the credentials, the task cannot reach a server's database: they are the only
    // place its secrets are.
    if backend != Backend::Sqlite {
        sb.run(
            EXE,
            &[
                "--create",
                "--username",
                "nocreds",
                "--email",
                "n@example.com",
            ],
        )
        .code(78)
        .stderr_has("no credentials");
    }
    sb.set_env("CREDENTIALS_DIRECTORY", creds_dir.clone());
    sb.run(
        EXE,
        &[
            "--create",
            "--username",
            "alice",
            "--email",
            "a@example.com",
        ],
    )
    .code(0);
    sb.run(EXE, &["--self-status"])
        .code(0)
        .stdout_has("version");
    // The self-test needs the administrator on a server: from the admin_url credential.
    sb.run(EXE, &["--self-test"]).code(0);
    sb.run(EXE, &["--self-backup"]).code(0);
    sb.run(
        EXE,
        &["--create", "--username", "bob", "--email", "b@example.com"],
    )
    .code(0);
    sb.run(EXE, &["--self-restore", "--yes"]).code(0);
    assert_eq!(
        sb.count(EXE, "SELECT COUNT(*) FROM users"),
        1,
        "the backup had alice only"
    );

    // --serve takes its token from the serve_token credential: a client must present it.
    let served = sb.serve(EXE, &["--listen", &format!("{TCP}127.0.0.1:0")]);
    let mut client = served.client();
    let refused = client.call(r#"{"username": "eve", "email": "e@example.com"}"#);
    assert_eq!(refused.kind(), Some("permission"), "{refused:?}");
    let mut client = served.client();
    assert!(client.call(&format!("AUTH {token}")).ok);
    assert!(
        client
            .call(r#"{"username": "carol", "email": "c@example.com"}"#)
            .ok
    );
    let (code, said) = served.terminate();
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains(token), "the token never shows: {said}");

    // A credential others could read is refused, as a secrets file would be.
    let loose = tempfile::tempdir().unwrap();
    credential(loose.path(), "serve_token", token);
    std::fs::set_permissions(
        loose.path().join("serve_token"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let mut cmd = sb.command(EXE, &["--self-status"]);
    cmd.env("CREDENTIALS_DIRECTORY", loose.path());
    e2e::Run::of(cmd, None).code(77).stderr_has("chmod 600");

    // Cleanup takes the administrator from the credential too; nothing secret was written to
    // the secrets directory meanwhile.
    sb.run(EXE, &["--self-cleanup", "--yes"]).code(0);
    assert!(!app_file.exists(), "no secrets file was written back");
    std::fs::set_permissions(creds.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}
