//! `hub doctor` on a hub made by `hub init`: every check passes, and each kind of damage an
//! operator meets fails its own check with a fix.

use hub::doctor::{Status, run};
use protocol::Timestamp;

fn now() -> Timestamp {
    hub::clock::now()
}

fn status_of(report: &hub::doctor::DoctorReport, name: &str) -> Status {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no `{name}` check in\n{}", report.render()))
        .status
}

#[test]
fn a_fresh_hub_is_healthy_and_each_damage_fails_its_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    hub::registry::admin::init(&data, "doctor test", "127.0.0.1:0".parse().unwrap(), now())
        .unwrap();
    let config = data.join("hub.toml");

    let fresh = run(&config, now());
    assert!(!fresh.failed(), "{}", fresh.render());
    for name in [
        "configuration",
        "case database",
        "box registry",
        "certificate authority",
        "disk",
    ] {
        assert_ne!(status_of(&fresh, name), Status::Fail, "{}", fresh.render());
    }
    assert_eq!(
        status_of(&fresh, "ingest log"),
        Status::Warn,
        "not made before the first serve"
    );

    // a database written by a newer hub
    let conn = rusqlite::Connection::open(data.join("hub.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let newer = run(&config, now());
    assert_eq!(status_of(&newer, "case database"), Status::Fail);
    assert!(
        newer.render().contains("newer than this hub's"),
        "{}",
        newer.render()
    );
    assert!(newer.failed());
    let conn = rusqlite::Connection::open(data.join("hub.db")).unwrap();
    conn.pragma_update(None, "user_version", hub::cases::db::SCHEMA_VERSION)
        .unwrap();
    drop(conn);

    // the CA key lost: named by the configuration check and by the CA's, the rest checked on
    std::fs::remove_file(data.join("ca.key")).unwrap();
    let no_key = run(&config, now());
    assert_eq!(status_of(&no_key, "certificate authority"), Status::Fail);
    assert_eq!(status_of(&no_key, "configuration"), Status::Fail);
    assert!(no_key.render().contains("ca.key"), "{}", no_key.render());
    assert_eq!(status_of(&no_key, "case database"), Status::Ok);

    // a CA close to its end (checked twenty years on, less a month)
    let later = Timestamp::from_unix_millis(now().as_unix_millis() + (20 * 365 - 30) * 86_400_000);
    hub::registry::admin::init(
        &dir.path().join("other"),
        "x",
        "127.0.0.1:0".parse().unwrap(),
        now(),
    )
    .unwrap();
    let aging = run(&dir.path().join("other/hub.toml"), later);
    assert_eq!(
        status_of(&aging, "certificate authority"),
        Status::Warn,
        "{}",
        aging.render()
    );

    // a configuration that does not parse: nothing further can be checked
    std::fs::write(&config, "api_listen_addr = 12\n").unwrap();
    let broken = run(&config, now());
    assert!(
        broken
            .checks
            .iter()
            .all(|c| c.name == "configuration" && c.status == Status::Fail),
        "{}",
        broken.render()
    );
    assert!(
        broken.render().contains("api_listen_addr"),
        "{}",
        broken.render()
    );
}
