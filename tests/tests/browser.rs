//! The browser harness itself: a real headless Chromium renders Chinese text, runs scripts,
//! clicks, takes screenshots, and catches a page that reaches off the machine.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::browser::Browser;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_clicks_types_screenshots_and_catches_requests_that_leave_loopback() {
    let browser = Browser::launch("harness").await.unwrap();
    let page = "<!doctype html><meta charset=utf-8><title>t</title>\
        <h1 id=h style='font-size:40px'>网格化社会治理 — grid</h1>\
        <input id=i><button id=b onclick=\"document.getElementById('h').textContent = \
        document.getElementById('i').value\">go</button>";
    browser
        .goto(&format!("data:text/html;charset=utf-8,{}", percent(page)))
        .await
        .unwrap();
    assert_eq!(
        browser.text("#h", T).await.unwrap(),
        "网格化社会治理 — grid"
    );
    browser.type_into("#i", "已结案", T).await.unwrap();
    browser.click("#b", T).await.unwrap();
    browser
        .wait_for(
            "the heading to change",
            T,
            "document.getElementById('h').textContent === '已结案'",
        )
        .await
        .unwrap();
    let shot = browser.screenshot("chinese-text").await.unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    assert_eq!(
        browser
            .eval("return arguments[0] + 1;", vec![41.into()])
            .await
            .unwrap(),
        42
    );
    browser.assert_offline().await.unwrap();

    // A page that asks for an outside image: the request is seen (and fails: nothing resolves).
    browser
        .eval(
            "const img = new Image(); img.src = 'http://tiles.example.org/0/0/0.png'; \
             document.body.appendChild(img); return null;",
            vec![],
        )
        .await
        .unwrap();
    let mut caught = None;
    for _ in 0..100 {
        match browser.assert_offline().await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                caught = Some(e.to_string());
                break;
            }
        }
    }
    let caught = caught.expect("the outside request is reported");
    assert!(caught.contains("tiles.example.org"), "{caught}");
    browser.quit().await;
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
