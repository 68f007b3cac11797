//! The admin HTTP endpoint: a front door to the control directory, so that
//! commands sent over HTTP are as durable as files.
//!
//! - `POST /commands` with a [`Command`] as JSON: written to the control
//!   directory; `202` and `{"id": …}`, or `400` with the reason.
//! - `GET /commands/<id>`: the command's outcome, or `404`.
//!
//! Every request needs `Authorization: Bearer <token>` (see
//! [`super::token`]); without it the answer is `401` and nothing else. The
//! endpoint binds loopback only (there is no TLS). A few workers serve one
//! connection each; a connection that does not deliver its whole request
//! within [`REQUEST_DEADLINE`] is answered `408` and closed, so a client
//! trickling its body holds one worker for a bounded time; when every
//! worker is busy and the queue is full, new connections get `503`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::command::Command;
use super::dir::ControlDir;
use crate::error::AdminError;

/// Connections served at once.
const WORKERS: usize = 4;
/// Accepted connections waiting for a worker.
const QUEUE: usize = 16;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 8 << 10;
/// Largest request body: a command is small.
const MAX_BODY: usize = 64 << 10;
/// Time a client has to send its whole request.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running admin endpoint; stops when dropped.
pub(crate) struct AdminServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// What a worker needs to answer.
struct Context {
    pipeline: String,
    control: ControlDir,
    token: String,
}

impl AdminServer {
    /// Listen on `addr` (loopback) for the pipeline named `pipeline`,
    /// accepting `token`.
    pub(crate) fn start(
        addr: SocketAddr,
        pipeline: String,
        control: ControlDir,
        token: String,
    ) -> Result<Self, AdminError> {
        if !addr.ip().is_loopback() {
            return Err(AdminError::NotLoopback { addr });
        }
        let listener = TcpListener::bind(addr).map_err(|source| AdminError::Io { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AdminError::Io { addr, source })?;
        let context = Arc::new(Context {
            pipeline,
            control,
            token,
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<TcpStream>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|source| AdminError::Io { addr, source })
        };
        for i in 0..WORKERS {
            let (rx, context, stop) = (rx.clone(), context.clone(), stopping.clone());
            // Not joined: a worker ends with its connection (within the
            // request deadline) once the queue is closed.
            spawn(
                format!("sluice-admin-{i}"),
                Box::new(move || loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(_) if stop.load(Ordering::SeqCst) => {}
                        Ok(stream) => serve(stream, &context),
                        Err(_) => return,
                    }
                }),
            )?;
        }
        let stop = stopping.clone();
        let accept = spawn(
            "sluice-admin".into(),
            Box::new(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else {
                        // Out of descriptors, say: do not spin.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    if let Err(mpsc::TrySendError::Full(stream)) = tx.try_send(stream) {
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                        respond(
                            &stream,
                            503,
                            &error_body("the admin endpoint is busy; try again"),
                            false,
                        );
                    }
                }
            }),
        )?;
        tracing::info!("admin endpoint on http://{addr} (POST /commands, GET /commands/<id>; bearer token required)");
        Ok(AdminServer {
            addr,
            stopping,
            accept: Some(accept),
        })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread; the workers end when its queue closes.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// A request as far as the endpoint cares.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// Read and answer one request, then close the connection.
fn serve(mut stream: TcpStream, context: &Context) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let (code, body) = match read_request(&mut stream, deadline) {
        Ok(request) if !super::token::authorized(&context.token, request.authorization.as_deref()) => {
            (401, error_body("missing or wrong bearer token: send `Authorization: Bearer <token>`; the token is in the pipeline's control directory (admin.token), readable only by the user running it, or in SLUICE_ADMIN_TOKEN"))
        }
        Ok(request) => handle(&request, context),
        Err((code, message)) => (code, error_body(&message)),
    };
    respond(&stream, code, &body, code == 401);
}

fn respond(mut stream: &TcpStream, code: u16, body: &str, challenge: bool) {
    let reason = match code {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let challenge = if challenge {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let head = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n", body.len());
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body.as_bytes()))
        .and_then(|_| stream.flush());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Read into `buf` before `deadline`; the number of bytes (0 at the end).
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, (u16, String)> {
    let timeout = || {
        (
            408,
            format!("the request did not arrive within {REQUEST_DEADLINE:?}"),
        )
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timeout());
    }
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| (500, e.to_string()))?;
    match stream.read(buf) {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(timeout())
        }
        Err(e) => Err((400, format!("reading the request: {e}"))),
    }
}

/// Read one request (head and `Content-Length` body) before `deadline`.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> Result<Request, (u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err((
                431,
                format!("the request head is larger than {MAX_HEAD} bytes"),
            ));
        }
        let n = read_some(stream, &mut chunk, deadline)?;
        if n == 0 {
            return Err((
                400,
                "the connection closed before the request was complete".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| (400, "the request head is not UTF-8".to_string()))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    let mut authorization = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| (400, format!("Content-Length `{value}` is not a number")))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((
                411,
                "send the body with a Content-Length (no chunked encoding)".into(),
            ));
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        }
    }
    if length > MAX_BODY {
        return Err((
            413,
            format!("the body is larger than {MAX_BODY} bytes; a command is small"),
        ));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = read_some(stream, &mut chunk, deadline)?;
        if n == 0 {
            return Err((
                400,
                "the connection closed before the body was complete".into(),
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Request {
        method,
        path,
        authorization,
        body,
    })
}

fn handle(request: &Request, context: &Context) -> (u16, String) {
    match (
        request.method.as_str(),
        request.path.strip_prefix("/commands"),
    ) {
        ("POST", Some("" | "/")) => {
            let command: Command = match serde_json::from_slice(&request.body) {
                Ok(c) => c,
                Err(e) => return (400, error_body(&format!("not a command: {e}"))),
            };
            if command.pipeline != context.pipeline {
                return (
                    400,
                    error_body(&format!(
                        "this endpoint serves pipeline `{}`, not `{}`",
                        context.pipeline, command.pipeline
                    )),
                );
            }
            match context.control.submit(&command) {
                Ok(_) => (202, serde_json::json!({ "id": command.id }).to_string()),
                Err(e) => (500, error_body(&e.to_string())),
            }
        }
        ("GET", Some(rest)) if rest.len() > 1 => match context.control.read(&rest[1..]) {
            Some(o) => (200, serde_json::to_string(&o).unwrap_or_default()),
            None => (404, error_body(&format!("no command `{}` yet", &rest[1..]))),
        },
        _ => (404, error_body("use POST /commands or GET /commands/<id>")),
    }
}
