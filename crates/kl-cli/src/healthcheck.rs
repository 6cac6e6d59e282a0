//! `<binary> healthcheck URL [--cacert F] [--cert F --key F] [--timeout 3s]`: one GET, for
//! Docker health checks in a FROM scratch image whose busybox `wget` speaks no TLS.
//!
//! Every kube-lite binary dispatches to [`dispatch`] first thing in `main`, so a compose file
//! can check any container with the binary it already runs:
//!
//! ```text
//! healthcheck: ["CMD", "apiserver", "healthcheck", "https://localhost:6443/readyz", "--cacert", "/pki/ca.crt"]
//! ```
//!
//! It prints the body on stdout and exits 0 when the answer is `200`; otherwise it exits 1 with
//! one line on stderr saying why (the status, or the connection/TLS error). The GET itself is
//! [`kl_tls::http_get`]: `https://` verifies the server against `--cacert` and presents
//! `--cert`/`--key` when given (mutual TLS).

use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;

/// The subcommand's name: `argv[1]` of any kube-lite binary.
pub const SUBCOMMAND: &str = "healthcheck";

#[derive(Parser, Debug)]
#[command(
    name = "healthcheck",
    about = "GET a URL (http or https), print the body; exit 0 on HTTP 200, 1 otherwise. For \
             container health checks."
)]
struct Flags {
    /// The URL to GET, e.g. https://localhost:6443/readyz or http://localhost:2381/health.
    url: String,

    /// CA certificate that verifies an https server (required for https).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,

    /// Client certificate to present (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// Private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Bound on the whole request (connect, TLS, answer), in Go notation.
    #[arg(long, value_parser = crate::duration, default_value = "3s")]
    timeout: Duration,
}

/// Runs `healthcheck` when `argv[1]` names it: `Some(exit code)`, else `None` (the binary goes
/// on as usual). Call it before parsing the binary's own flags:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     if let Some(code) = kl_cli::healthcheck::dispatch() {
///         return code;
///     }
///     // ... the binary's own flags and run()
///     std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn dispatch() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let first = args.next()?;
    (first == SUBCOMMAND).then(|| {
        let program = Path::new(&argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        main(&program, args.collect())
    })
}

/// The subcommand with its arguments (after `healthcheck`); `program` prefixes messages.
pub fn main(program: &str, args: Vec<OsString>) -> ExitCode {
    let argv = std::iter::once(OsString::from(format!("{program} {SUBCOMMAND}"))).chain(args);
    let flags = match Flags::try_parse_from(argv) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&flags) {
        Ok(body) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(body.as_bytes());
            if !body.is_empty() && !body.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("{program} {SUBCOMMAND}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// The body of a `200` answer, or the one-line reason it is not healthy.
fn run(flags: &Flags) -> Result<String, String> {
    let tls = match &flags.cacert {
        Some(ca) => {
            let identity = flags.cert.as_deref().zip(flags.key.as_deref());
            Some(kl_tls::ClientTls::load(ca, identity).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let response = runtime
        .block_on(kl_tls::http_get(&flags.url, tls.as_ref(), flags.timeout))
        .map_err(|e| e.to_string())?;
    if response.status == 200 {
        Ok(response.body)
    } else {
        let first_line = response.body.lines().next().unwrap_or_default();
        let mut reason = format!("{}: HTTP {}", flags.url, response.status);
        if !first_line.is_empty() {
            reason.push_str(": ");
            reason.push_str(&first_line.chars().take(200).collect::<String>());
        }
        Err(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        io::{BufRead, BufReader},
        net::TcpListener,
    };

    /// A tiny HTTP server on a thread: answers each connection with `status` and `body`.
    fn server(status: &'static str, body: &'static str, connections: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let (mut s, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes());
            }
        });
        port
    }

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("healthcheck").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn ok_on_200_with_the_body() {
        let port = server("200 OK", "ok", 2);
        let url = format!("http://127.0.0.1:{port}/healthz");
        assert_eq!(run(&flags(&[&url])), Ok("ok".into()));
        assert_eq!(main("t", vec![url.into()]), ExitCode::SUCCESS);
    }

    #[test]
    fn fails_otherwise_with_a_reason() {
        let port = server("503 Service Unavailable", "[-]etcd failed\nmore", 2);
        let url = format!("http://127.0.0.1:{port}/readyz");
        let e = run(&flags(&[&url, "--timeout", "2s"])).unwrap_err();
        assert_eq!(e, format!("{url}: HTTP 503: [-]etcd failed"));
        assert_eq!(main("t", vec![url.into()]), ExitCode::FAILURE);
        // Nothing listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = run(&flags(&[&format!("http://127.0.0.1:{port}/")])).unwrap_err();
        assert!(e.contains("connecting to"), "{e}");
        // https without a CA to verify the server with.
        let e = run(&flags(&["https://127.0.0.1:1/"])).unwrap_err();
        assert!(e.contains("--cacert"), "{e}");
        // Bad usage is exit 2 (clap's convention), --cert without --key too.
        assert_eq!(main("t", vec![]), ExitCode::from(2));
        assert_eq!(
            main("t", vec!["http://x/".into(), "--cert".into(), "c".into()]),
            ExitCode::from(2)
        );
    }

    #[test]
    fn https_with_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path();
        kl_pki::generate(&kl_pki::PkiSpec::new(), pki).unwrap();
        let serving = kl_pki::paths::APISERVER;
        let config = kl_tls::ServerTls::load(
            &serving.cert_in(pki),
            &serving.key_in(pki),
            Some(&kl_pki::paths::CA.cert_in(pki)),
            true,
        )
        .unwrap()
        .rustls_config()
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().take(2) {
                let mut s = s.unwrap();
                let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::Stream::new(&mut conn, &mut s);
                let mut buf = [0u8; 1024];
                if std::io::Read::read(&mut tls, &mut buf).is_err() {
                    continue;
                }
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        let ca = kl_pki::paths::CA.cert_in(pki);
        let admin = kl_pki::paths::ADMIN;
        let (cert, key) = (admin.cert_in(pki), admin.key_in(pki));
        let url = format!("https://localhost:{port}/livez");
        let args = [
            url.as_str(),
            "--cacert",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        // localhost may resolve to ::1 first; the server listens on 127.0.0.1 only, and the
        // connect falls back to it.
        assert_eq!(run(&flags(&args)), Ok("ok".into()));
        // Without the client certificate, the server (which requires one) refuses.
        assert!(run(&flags(&args[..3])).is_err());
    }
}
