//! The report's HTML: the well-formedness check the report tests use, and the page opened in
//! headless Chromium with its charts drawn.

#[allow(dead_code)] // the HTML tests use a few of the fixtures
#[path = "common/report_fixture.rs"]
mod report_fixture;
use report_fixture::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_well_formedness_check_finds_what_is_wrong() {
    assert_well_formed("<!DOCTYPE html>\n<p>a &amp; <b>b</b><br/><meta charset=\"x\"></p>");
    for bad in [
        "<p><b>x</p></b>",
        "<p>a < b</p>",
        "<p>a & b</p>",
        "<ul><li>x</li>",
        "<p>x > y</p>",
        "<p>**x**</p>",
    ] {
        assert!(
            std::panic::catch_unwind(|| assert_well_formed(bad)).is_err(),
            "{bad}"
        );
    }
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn headless(browser: &str, extra: &[&str], page: &Path) -> std::process::Output {
    let profile = page.with_extension("chromium-profile");
    Command::new("timeout")
        .arg("90")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,3000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

#[test]
fn the_html_opens_in_headless_chromium_with_its_charts() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: no chromium on this machine (Debian package `chromium`)");
        return;
    };
    let (_scratch_dir, dir) = fixture("html", &PLAIN);
    let page = dir.join("report.html");
    report(&[
        dir.to_str().unwrap(),
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://")
            || html.matches("http://").count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(!html.contains("https://") && !html.contains("<script"));
    // J/token for three phases, power over time, two loss curves, expert load in three phases.
    let charts = html.matches("<svg").count();
    assert_eq!(charts, 9, "charts in the file");

    let dom = headless(browser, &["--dump-dom"], &page);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom_text.matches("<svg").count(),
        charts,
        "charts in the parsed DOM"
    );
    assert!(dom_text.contains("class=\"errorbar\"") && dom_text.contains("class=\"cell\""));
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !log.contains("net::ERR_") && !log.contains("Uncaught"),
        "{log}"
    );

    // A screenshot of the report against one of an empty page of the same size: the charts and
    // tables make the PNG several times larger than a blank one.
    let shot = dir.join("report.png");
    let out = headless(
        browser,
        &[&format!("--screenshot={}", shot.display())],
        &page,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blank_page = dir.join("blank.html");
    std::fs::write(&blank_page, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank = dir.join("blank.png");
    headless(
        browser,
        &[&format!("--screenshot={}", blank.display())],
        &blank_page,
    );
    let (size, blank_size) = (
        std::fs::metadata(&shot).unwrap().len(),
        std::fs::metadata(&blank).unwrap().len(),
    );
    assert!(
        size > 5 * blank_size,
        "screenshot {size} B against a blank page's {blank_size} B"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
