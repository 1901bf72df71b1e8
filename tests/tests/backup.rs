//! `--self-backup` and `--self-restore` on SQLite, PostgreSQL and MariaDB: round trips, moves
//! between backends, refused files, retention, and `kill -9` in the middle of either.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::{Backend, BackendSandbox, on_every_backend};

const EXE: &str = "create-user";

on_every_backend!(
    a_restore_puts_back_exactly_the_backup_and_inserts_go_on,
    restore_needs_yes_without_a_terminal_and_a_backup_to_restore,
    damaged_truncated_and_foreign_files_are_refused_and_change_nothing,
    retention_keeps_the_newest_backups,
    kill_during_a_backup_leaves_no_file_that_restore_would_pick,
    kill_during_a_restore_leaves_the_database_as_it_was,
    a_sound_backup_whose_content_does_not_fit_is_refused_naming_table_row_and_column,
);

fn backed_up(sb: &BackendSandbox) -> String {
    let run = sb.run(EXE, &["--self-backup", "--json"]);
    run.code(0);
    run.json()["file"].as_str().unwrap().to_string()
}

fn set_up(backend: Backend) -> Option<BackendSandbox> {
    let sb = BackendSandbox::new(backend)?;
    sb.run_admin(EXE, &["--self-setup"]).code(0);
    Some(sb)
}

fn a_restore_puts_back_exactly_the_backup_and_inserts_go_on(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    sb.create_user("alice", "alice@example.com").code(0);
    sb.create_user_with_password("bob", "bob@example.com", "correct horse")
        .code(0);
    let run = sb.run(EXE, &["--self-backup", "--json"]);
    run.code(0);
    let report = run.json();
    assert_eq!(report["rows"], 2, "{run}");
    let tables: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["sessions", "users"], "every table of the domain");
    let file = report["file"].as_str().unwrap().to_string();
    let before = sb.user_rows();

    sb.create_user("carol", "carol@example.com").code(0);
    let restore = sb.run_admin(EXE, &["--self-restore", "--yes"]);
    restore
        .code(0)
        .stdout_has("restored 2 row(s)")
        .stdout_has(&file)
        .stdout_has("pre-restore");
    assert_eq!(
        sb.user_rows(),
        before,
        "the restore did not put back the backup's rows"
    );

    // The keys handed out go on past the restored ones: no collision.
    sb.create_user("dave", "dave@example.com").code(0);
    // The keys and constraints are back too (PostgreSQL's restore rebuilds them after the load).
    sb.create_user("alice", "again@example.com").code(73);
    sb.create_user("carol", "carol@example.com").code(0);
    assert_eq!(sb.user_rows().len(), 4);

    // The default is the newest backup taken with --self-backup, never a safety backup.
    sb.run_admin(EXE, &["--self-restore", "--yes"])
        .code(0)
        .stdout_has(&file);
    assert_eq!(sb.user_rows(), before);

    // The safety backup undoes the restore.
    let safety = sb
        .backup_files()
        .into_iter()
        .rfind(|f| f.contains("pre-restore"))
        .unwrap();
    let safety = sb.backup_dir().join(safety);
    sb.run_admin(
        EXE,
        &[
            "--self-restore",
            "--yes",
            "--from",
            safety.to_str().unwrap(),
        ],
    )
    .code(0)
    .stdout_has("restored 4 row(s)");
}

fn restore_needs_yes_without_a_terminal_and_a_backup_to_restore(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    sb.run_admin(EXE, &["--self-restore", "--yes"])
        .code(66)
        .stderr_has("there is no backup of")
        .stderr_has("(domain users)")
        .stderr_has("--self-backup");
    sb.run_admin(
        EXE,
        &[
            "--self-restore",
            "--yes",
            "--from",
            "/nonexistent/b.jsonl.zst",
        ],
    )
    .code(66)
    .stderr_has("does not exist");
    sb.create_user("alice", "alice@example.com").code(0);
    backed_up(&sb);
    sb.create_user("bob", "bob@example.com").code(0);
    sb.run_admin(EXE, &["--self-restore"])
        .code(2)
        .stderr_has("no terminal")
        .stderr_has("--yes");
    assert_eq!(
        sb.user_rows().len(),
        2,
        "an unconfirmed restore changed the data"
    );
    sb.run(EXE, &["--self-backup", "--from", "x"]).code(2);
}

fn damaged_truncated_and_foreign_files_are_refused_and_change_nothing(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    for i in 0..20 {
        sb.create_user(&format!("user{i}"), "u@example.com").code(0);
    }
    let good = std::fs::read(backed_up(&sb)).unwrap();
    sb.create_user("late", "late@example.com").code(0);
    let before = sb.user_rows();
    let dir = sb.root().to_path_buf();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x04;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped.jsonl.zst", flipped, "damaged"),
        (
            "truncated.jsonl.zst",
            good[..good.len() - 7].to_vec(),
            "damaged",
        ),
        ("empty.jsonl.zst", Vec::new(), "damaged"),
        (
            "foreign.jsonl.zst",
            b"id,name\n1,alice\n".to_vec(),
            "not a commondb backup",
        ),
    ];
    for (name, bytes, says) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        sb.run_admin(
            EXE,
            &["--self-restore", "--yes", "--from", path.to_str().unwrap()],
        )
        .code(65)
        .stderr_has(says)
        .stderr_has("nothing was changed");
        assert_eq!(sb.user_rows(), before, "{name} changed the data");
    }
    assert!(
        !sb.backup_files().iter().any(|f| f.contains("pre-restore")),
        "a refused file got as far as the safety backup"
    );
}

fn retention_keeps_the_newest_backups(backend: Backend) {
    let Some(mut sb) = set_up(backend) else {
        return;
    };
    sb.set_env("COMMONDB_BACKUP_KEEP", "2");
    sb.create_user("alice", "alice@example.com").code(0);
    let files: Vec<String> = (0..3).map(|_| backed_up(&sb)).collect();
    let kept: Vec<String> = sb
        .backup_files()
        .iter()
        .map(|f| sb.backup_dir().join(f).display().to_string())
        .collect();
    assert_eq!(kept, files[1..], "retention kept the wrong backups");
    sb.set_env("COMMONDB_BACKUP_KEEP", "0");
    sb.run(EXE, &["--self-backup"])
        .code(78)
        .stderr_has("backup_keep");
}

/// Waits until a file whose name satisfies `pred` appears in the backup directory.
fn wait_for(sb: &BackendSandbox, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sb.backup_files().iter().any(|f| pred(f)) {
        assert!(Instant::now() < deadline, "no {what} appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn kill_during_a_backup_leaves_no_file_that_restore_would_pick(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    sb.fill_users(300_000);
    let mut child = sb
        .command(EXE, &["--self-backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sb, "partial backup", |f| f.starts_with(".partial-"));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the backup ended before it was killed"
    );
    assert!(
        !sb.backup_files().iter().any(|f| f.ends_with(".jsonl.zst")),
        "a killed backup left {:?}",
        sb.backup_files()
    );
    sb.run_admin(EXE, &["--self-restore", "--yes"]).code(66);
    // The next backup clears the dead one's partial file away.
    backed_up(&sb);
    assert_eq!(sb.backup_files().len(), 1, "{:?}", sb.backup_files());
}

fn kill_during_a_restore_leaves_the_database_as_it_was(backend: Backend) {
    let Some(sb) = set_up(backend) else { return };
    sb.fill_users(300_000);
    backed_up(&sb);
    sb.exec(EXE, &["DELETE FROM users"]);
    sb.create_user("only", "only@example.com").code(0);
    let before = sb.user_rows();
    let mut cmd = sb.command(EXE, &["--self-restore", "--yes"]);
    if let Some(db) = &sb.server {
        cmd.env("COMMONDB_ADMIN_URL", &db.admin_url);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The safety backup is complete before the replacing transaction begins.
    wait_for(&sb, "safety backup", |f| {
        f.ends_with("-pre-restore.jsonl.zst")
    });
    // This sleep is the test's choice of moment: the restore's transaction has begun (the
    // safety backup is taken inside it), and 50 ms more puts the kill among the rows it
    // replaces, which nothing outside the restore can see on every backend. Any moment inside
    // the transaction must leave the data as it was.
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the restore ended before it was killed"
    );
    assert_eq!(sb.user_rows(), before, "a killed restore changed the data");
    sb.create_user("after", "after@example.com").code(0);
}

#[test]
fn a_backup_moves_from_sqlite_to_postgres_to_mariadb_and_back() {
    let Some(lite) = set_up(Backend::Sqlite) else {
        return;
    };
    let Some(pg) = set_up(Backend::Postgres) else {
        return;
    };
    let Some(my) = set_up(Backend::MySql) else {
        return;
    };
    lite.create_user("alice", "alice@example.com").code(0);
    lite.create_user_with_password("bob", "bob@example.com", "correct horse")
        .code(0);
    lite.exec(EXE, &["INSERT INTO users (username, email, created_at) VALUES ('tab\tand\\\\slash', 'quote''s@example.com', '2026-01-02T03:04:05.000006+00:00')"]);
    let original = lite.user_rows();
    let mut file = backed_up(&lite);
    for next in [&pg, &my, &lite] {
        next.run_admin(EXE, &["--self-restore", "--yes", "--from", &file])
            .code(0)
            .stdout_has("restored 3 row(s)");
        assert_eq!(next.user_rows().len(), 3);
        file = backed_up(next);
    }
    assert_eq!(
        lite.user_rows(),
        original,
        "the round trip through the servers changed the rows"
    );
    for sb in [&lite, &pg, &my] {
        sb.create_user("carol", "carol@example.com").code(0);
    }
}

/// Every column type backups carry goes through PostgreSQL's binary `COPY` and comes back as
/// the server itself renders it: extremes, NULLs, escapes, bytes and microseconds included.
#[test]
fn every_column_type_round_trips_through_postgres_binary_copy() {
    let Some(sb) = set_up(Backend::Postgres) else {
        return;
    };
    sb.exec(
        EXE,
        &[
            "CREATE TABLE kinds (id int4 PRIMARY KEY, s int2, i int4, b int8, r real, d float8, \
             flag bool, t text, v varchar(10), c char(3), bin bytea, ts timestamp, tz timestamptz)",
            "INSERT INTO kinds VALUES \
             (1, -32768, -2147483648, 9223372036854775807, 3.25, -1.5e-300, true, \
              E'tab\\there\\nnew line \\\\ back ünïcode', 'short', 'ab', '\\x00ff0a5c', \
              '1999-12-31 23:59:59.999999', '2000-01-01 00:00:00.000001+00'), \
             (2, 32767, 2147483647, -9223372036854775808, -0.0, 1e300, false, '', '', '', '\\x', \
              '1900-02-28 12:00:00', '2262-04-11 23:47:16.854775+05:30'), \
             (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            "GRANT SELECT ON kinds TO PUBLIC",
        ],
    );
    let rows = || {
        e2e::block_on(async {
            let mut conn = sb.admin_conn(EXE).await;
            conn.strings("SELECT kinds::text FROM kinds ORDER BY id")
                .await
        })
        .unwrap()
    };
    let before = rows();
    assert_eq!(before.len(), 3);
    let file = backed_up(&sb);
    sb.exec(
        EXE,
        &[
            "DELETE FROM kinds",
            "INSERT INTO kinds (id, t) VALUES (9, 'newer')",
        ],
    );
    sb.run_admin(EXE, &["--self-restore", "--yes", "--from", &file])
        .code(0);
    assert_eq!(
        rows(),
        before,
        "a value changed on its way through the backup"
    );
}

/// Undoing a restore with its own safety backup works even when retention keeps one: the file
/// being restored is opened before the new safety backup prunes anything.
#[test]
fn a_restore_from_the_only_safety_backup_survives_retention() {
    let Some(mut sb) = set_up(Backend::Sqlite) else {
        return;
    };
    sb.set_env("COMMONDB_BACKUP_KEEP", "1");
    sb.create_user("alice", "alice@example.com").code(0);
    let first = backed_up(&sb);
    sb.create_user("bob", "bob@example.com").code(0);
    let with_bob = sb.user_rows();
    let restore = sb.run_admin(
        EXE,
        &["--self-restore", "--yes", "--json", "--from", &first],
    );
    restore.code(0);
    let safety = restore.json()["safety_backup"]
        .as_str()
        .expect("the report names the safety backup")
        .to_string();
    // Restoring the safety backup takes a new one, which may prune the old: not before use.
    sb.run_admin(EXE, &["--self-restore", "--yes", "--from", &safety])
        .code(0);
    assert_eq!(sb.user_rows(), with_bob, "the undo did not bring bob back");
}

/// Writes a backup with sound checksums holding `rows` under `columns`, the rest of its header
/// taken from `like`, into a private directory of `sb`; returns its path.
fn forge(sb: &BackendSandbox, like: &str, columns: &[&str], rows: &[&str]) -> String {
    use commondb::backup::file::{Writer, header};
    let mut head = header(std::path::Path::new(like)).unwrap();
    head.tables.retain(|t| t.name == "users");
    head.tables[0].columns = columns.iter().map(|c| c.to_string()).collect();
    head.tables[0].rows = rows.len() as u64;
    let dir = sb.root().join("forged");
    let n = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    let mut out = Writer::create(&dir, format!("forged-{n}"), &head).unwrap();
    out.table(&head.tables[0].name).unwrap();
    for row in rows {
        out.row(|line| {
            line.extend_from_slice(row.as_bytes());
            Ok(())
        })
        .unwrap();
    }
    let (path, _) = out.finish().unwrap();
    path.to_str().unwrap().to_string()
}

fn a_sound_backup_whose_content_does_not_fit_is_refused_naming_table_row_and_column(
    backend: Backend,
) {
    let Some(sb) = set_up(backend) else { return };
    sb.create_user("alice", "alice@example.com").code(0);
    let like = backed_up(&sb);
    let before = sb.user_rows();
    let backups = sb.backup_files();
    let all = ["id", "username", "email", "password_hash", "created_at"];
    let at = r#""2026-11-30T10:00:00.000001+00:00""#;
    let row = |id: &str, name: &str| format!(r#"[{id},{name},"a@example.com",null,{at}]"#);
    let restore = |file: &str| sb.run_admin(EXE, &["--self-restore", "--yes", "--from", file]);

    // The forger itself makes backups that restore.
    let good = forge(
        &sb,
        &like,
        &all,
        &[&row("7", r#""zoe""#), &row("8", r#""yan""#)],
    );
    restore(&good).code(0).stdout_has("restored 2 row(s)");
    assert_eq!(sb.user_rows().len(), 2);
    sb.run_admin(EXE, &["--self-restore", "--yes", "--from", &like])
        .code(0);
    assert_eq!(sb.user_rows(), before);
    let backups_now = sb.backup_files();

    let dup_column = [
        "id",
        "username",
        "username",
        "email",
        "password_hash",
        "created_at",
    ];
    let bad_column = ["id", "user name", "email", "password_hash", "created_at"];
    let no_email = ["id", "username", "password_hash", "created_at"];
    let short = r#"[2,"bob","b@example.com",null]"#.to_string();
    let no_email_row = format!(r#"[1,"ann",null,{at}]"#);
    // What is wrong, the header's columns, the rows, what the refusal says.
    type Case<'a> = (&'a str, &'a [&'a str], Vec<String>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "a column listed twice",
            &dup_column,
            vec![format!(r#"[1,"a","b","a@example.com",null,{at}]"#)],
            &["column users.username twice"],
        ),
        (
            "a table without columns",
            &[],
            vec!["[]".into()],
            &["users without columns"],
        ),
        (
            "a column that is no identifier",
            &bad_column,
            vec![row("1", r#""ann""#)],
            &["\"user name\"", "not a valid SQL identifier"],
        ),
        (
            "text in an integer column",
            &all,
            vec![row("1", r#""ann""#), row(r#""abc""#, r#""bob""#)],
            &["row 2 of table users", "\"abc\" in column id"],
        ),
        (
            "a fraction in an integer column",
            &all,
            vec![row("1.5", r#""ann""#)],
            &["row 1 of table users", "1.5 in column id"],
        ),
        (
            "a number past a signed 64-bit integer",
            &all,
            vec![row("18446744073709551615", r#""ann""#)],
            &["row 1 of table users", "in column id"],
        ),
        (
            "the largest key there is",
            &all,
            vec![row("9223372036854775807", r#""ann""#)],
            &["table users holds the largest key its column id can take"],
        ),
        (
            "a NUL in text",
            &all,
            vec![row("1", r#""an\u0000n""#)],
            &["row 1 of table users", "NUL character in column username"],
        ),
        (
            "a row with too few values",
            &all,
            vec![row("1", r#""ann""#), short],
            &["row 2 of table users has 4 values for its 5 columns"],
        ),
        (
            "a duplicate key",
            &all,
            vec![row("1", r#""ann""#), row("2", r#""ann""#)],
            &["the database refused", "table users", "username"],
        ),
        (
            "a missing value the schema requires",
            &no_email,
            vec![no_email_row],
            &["the database refused row 1 of table users", "email"],
        ),
    ];
    for (what, columns, rows, says) in cases {
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let file = forge(&sb, &like, columns, &rows);
        let run = restore(&file);
        run.code(65).stderr_has("nothing was changed");
        for s in says {
            assert!(run.stderr.contains(s), "{what}: wants {s:?}\n{run}");
        }
        assert_eq!(sb.user_rows(), before, "{what} changed the data");
        assert_eq!(
            sb.backup_files(),
            backups_now,
            "{what} left a safety backup behind"
        );
    }
    // The safety backups of the two restores that succeeded are all that was added.
    assert_eq!(backups_now.len(), backups.len() + 2);
}

/// Two databases of one executable (staging and production, say) keep apart backups: the
/// newest backup of one is never restored into the other, and retention counts each one's own.
#[test]
fn backups_of_two_databases_of_one_executable_never_mix() {
    let Some(mut sb) = set_up(Backend::Sqlite) else {
        return;
    };
    sb.set_env("COMMONDB_BACKUP_KEEP", "1");
    sb.create_user("alice", "alice@example.com").code(0);
    let first = backed_up(&sb);
    let first_db = sb.database(EXE);
    let second_db = sb.root().join("second.sqlite3");
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("sqlite://{}", second_db.display()),
    );
    sb.create_user("bob", "bob@example.com").code(0);
    sb.run_admin(EXE, &["--self-restore", "--yes"])
        .code(66)
        .stderr_has("there is no backup");
    let second = backed_up(&sb);
    assert!(
        std::path::Path::new(&first).exists(),
        "retention on the second database removed the first's backup"
    );
    sb.run_admin(EXE, &["--self-restore", "--yes"])
        .code(0)
        .stdout_has(&second);
    // The first database, named by its path this time, still finds its own.
    sb.set_env(
        "COMMONDB_DATABASE_URL",
        format!("sqlite://{}", first_db.display()),
    );
    sb.run_admin(EXE, &["--self-restore", "--yes"])
        .code(0)
        .stdout_has(&first);
}

/// `--from` a file that someone else owns or could have changed needs `--trust-file`: whoever
/// can write it decides what the restore puts in the database.
#[test]
fn from_a_file_others_could_have_written_needs_trust_file() {
    use std::os::unix::fs::PermissionsExt;
    let Some(sb) = set_up(Backend::Sqlite) else {
        return;
    };
    sb.create_user("alice", "alice@example.com").code(0);
    let file = backed_up(&sb);
    let copy = sb.root().join("copy.jsonl.zst");
    std::fs::copy(&file, &copy).unwrap();
    let copy = copy.to_str().unwrap();
    let chmod = |mode| std::fs::set_permissions(copy, std::fs::Permissions::from_mode(mode));
    let restore = |extra: &[&str]| {
        let mut args = vec!["--self-restore", "--yes", "--from", copy];
        args.extend_from_slice(extra);
        sb.run_admin(EXE, &args)
    };
    chmod(0o644).unwrap();
    restore(&[]).code(0);
    for (mode, says) in [(0o664, "can be changed by its group"), (0o666, "by anyone")] {
        chmod(mode).unwrap();
        restore(&[])
            .code(77)
            .stderr_has(says)
            .stderr_has("nothing was changed")
            .stderr_has("--trust-file");
        restore(&["--trust-file"]).code(0);
    }
    chmod(0o600).unwrap();
    // Only root may give a file away; elsewhere the mode cases above stand alone.
    if std::os::unix::fs::chown(copy, Some(65534), None).is_ok() {
        restore(&[]).code(77).stderr_has("owned by user 65534");
        restore(&["--trust-file"]).code(0);
    }
    sb.run_admin(EXE, &["--self-restore", "--yes", "--trust-file"])
        .code(2);
}

/// On a terminal, a backup and a restore show how far they got (rows, bytes, rate, ETA) and
/// clear the bar before the result; piped, they print nothing of the kind.
#[test]
fn backup_and_restore_show_progress_on_a_terminal_only() {
    let Some(sb) = set_up(Backend::Sqlite) else {
        return;
    };
    // Enough rows for the bar to move: it is updated every 4096 rows.
    sb.fill_users(10_000);
    // script(1) runs the command on a pseudo-terminal and copies what it printed to stdout.
    let on_terminal = |args: &str| {
        let line = format!("stty cols 120; {} {args}", e2e::bin(EXE).display());
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env_clear()
            .envs(sb.env())
            // A terminal that can redraw a line (without TERM, indicatif takes it for a dumb one).
            .env("TERM", "xterm")
            .current_dir(sb.root());
        e2e::Run::of(cmd, None)
    };
    on_terminal("--self-backup")
        .code(0)
        .stdout_has("create-user: backup [")
        .stdout_has("/10,000 rows")
        .stdout_has("rows/s, ETA")
        .stdout_has("backed up 10000 row(s)");
    on_terminal("--self-restore --yes")
        .code(0)
        .stdout_has("create-user: safety backup [")
        .stdout_has("create-user: restore [")
        .stdout_has("restored 10000 row(s)");
    sb.run(EXE, &["--self-backup"])
        .code(0)
        .never_shows("rows/s");
    sb.run(EXE, &["--self-restore", "--yes"])
        .code(0)
        .never_shows("rows/s");
}
