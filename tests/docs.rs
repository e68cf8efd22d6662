//! The docs cannot drift: every shell block marked `sh runnable` in README.md and docs/*.md is run
//! on the embedded store, against the server that the page's `sh server` block starts, and every
//! `# → …` line of a block must match a line of that block's output, in order.
//!
//! The convention (docs/testing.md): all runnable blocks of one page run in document order as one
//! bash script (`set -euo pipefail`), so variables carry from block to block; the working directory
//! is a fresh temporary one; `handler` on `PATH` is the binary under test; `localhost:7071` is
//! replaced by a free port; `…` in an expected line matches any text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MARKER: &str = "@@runnable-block@@";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// One fenced block of a page.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block { info: info.trim().to_string(), text: String::new(), line: i + 1 })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The pages that hold runnable blocks.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir("docs")
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A command with `handler` on PATH and none of the test runner's own settings.
fn command(program: &str, bin_dir: &Path, cwd: &Path, port: u16) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let lower = name.to_string_lossy().to_ascii_lowercase();
        if lower.starts_with("jwtrefreshtoken") || lower == "functions_customhandler_port" {
            cmd.env_remove(&name);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .current_dir(cwd);
    cmd
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_listening(server: &mut Server, port: u16, page: &Path) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{}: the `sh server` block exited with {status}: {err}", page.display());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{}: the `sh server` block did not listen on {port} within 30 s", page.display());
}

/// `expected` (with `…` matching any text) matches the whole of `line`.
fn matches(expected: &str, line: &str) -> bool {
    let mut parts = expected.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.trim_end().strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn run_page(page: &Path) -> usize {
    let markdown = std::fs::read_to_string(page).expect("read page");
    let all = blocks(&markdown);
    let runnable: Vec<&Block> = all.iter().filter(|b| b.info == "sh runnable").collect();
    if runnable.is_empty() {
        return 0;
    }
    let servers: Vec<&Block> = all.iter().filter(|b| b.info == "sh server").collect();
    assert!(servers.len() <= 1, "{}: at most one `sh server` block", page.display());

    let dir = tempfile::tempdir().expect("temp dir");
    let bin_dir = dir.path().join("bin");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    std::fs::create_dir_all(&work).expect("work dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_handler"), bin_dir.join("handler")).expect("link handler");
    let port = free_port();
    let with_port = |text: &str| text.replace("localhost:7071", &format!("localhost:{port}"));

    let _server = servers.first().map(|block| {
        let mut server = Server(
            command("bash", &bin_dir, &work, port)
                .args(["-c", &format!("exec {}", block.text.trim())])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the server block"),
        );
        wait_until_listening(&mut server, port, page);
        server
    });

    let mut script = String::from("set -euo pipefail\n");
    for block in &runnable {
        script.push_str(&format!("printf '\\n{MARKER}\\n'\n{}\n", with_port(&block.text)));
    }
    let mut child = command("bash", &bin_dir, &work, port)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the runnable blocks");
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout_pipe.read_to_string(&mut out);
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr_pipe.read_to_string(&mut err);
        err
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            panic!("{}: the runnable blocks took longer than {SCRIPT_TIMEOUT:?}", page.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    assert!(status.success(), "{}: the runnable blocks failed ({status}):\n{stdout}\n{stderr}", page.display());

    // Output of block i is what follows the i-th marker.
    let outputs: Vec<&str> = stdout.split(&format!("\n{MARKER}\n")).skip(1).collect();
    assert_eq!(outputs.len(), runnable.len(), "{}: every block ran:\n{stdout}", page.display());
    let mut expectations = 0;
    for (block, output) in runnable.iter().zip(&outputs) {
        let mut lines = output.lines();
        for expected in block.text.lines().filter_map(|l| l.trim_start().strip_prefix("# → ")) {
            let expected = with_port(expected);
            assert!(
                lines.any(|l| matches(&expected, l)),
                "{}:{}: expected a line `{expected}` in this block's output (in order):\n{output}\nstderr:\n{stderr}",
                page.display(),
                block.line
            );
            expectations += 1;
        }
    }
    expectations
}

#[test]
fn every_runnable_block_of_the_docs_runs_and_prints_what_the_docs_say() {
    let mut ran = Vec::new();
    for page in pages() {
        let checked = run_page(&page);
        if checked > 0 {
            ran.push((page.display().to_string(), checked));
        }
    }
    assert!(ran.iter().any(|(p, _)| p == "README.md"), "the README's walkthrough is runnable: {ran:?}");
    assert!(ran.iter().all(|(_, n)| *n > 0), "{ran:?}");
}

#[test]
fn expected_lines_match_with_ellipses_as_any_text() {
    assert!(matches("{\"a\":…,\"b\":2}", "{\"a\":\"x\",\"b\":2}"));
    assert!(matches("added user alice (id …, roles: admin)", "added user alice (id 1f, roles: admin)"));
    assert!(matches("alice…active…roles: admin", "alice\tid\tactive\troles: admin"));
    assert!(matches("exact", "exact  "));
    assert!(!matches("exact", "exactly"));
    assert!(!matches("a…c", "abd"));
    assert!(!matches("{\"keys\":[]}", "{\"keys\":[{}]}"));
}

#[test]
fn blocks_are_read_with_their_info_strings() {
    let page = "text\n```sh runnable\necho hi\n# → hi\n```\n```json\n{}\n```\n";
    let found = blocks(page);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].info, "sh runnable");
    assert_eq!(found[0].text, "echo hi\n# → hi\n");
    assert_eq!(found[0].line, 2);
    assert_eq!(found[1].info, "json");
}
