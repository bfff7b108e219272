//! The private PostgreSQL cluster the hub's PostgreSQL tests run on: it starts on a free port,
//! keeps what was committed across a crash restart, and goes away with its folder.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use e2e::postgres::Postgres;

#[test]
fn a_private_cluster_starts_keeps_commits_across_a_crash_and_stops() {
    let mut pg = Postgres::start().unwrap();
    pg.create_db("hub").unwrap();
    pg.psql(
        "hub",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)",
    )
    .unwrap();
    assert_eq!(pg.psql("hub", "SELECT sum(n) FROM t").unwrap(), "3");
    assert!(pg.url("hub").contains(&format!(":{}/hub", pg.port())));
    pg.restart().unwrap();
    assert_eq!(
        pg.psql("hub", "SELECT count(*) FROM t").unwrap(),
        "2",
        "committed rows survive an immediate stop"
    );
    let err = pg.psql("hub", "SELECT * FROM missing").unwrap_err();
    assert!(err.to_string().contains("missing"), "{err:#}");
    let port = pg.port();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stopped with its handle"
    );
}
