//! Property tests for the parsers that see peer bytes (the fuzzing the
//! project's style guide asks for, run on stable Rust with proptest):
//! nothing a client or backend sends may panic the codec, and what the
//! chunked decoder and the request parser accept round-trips exactly.
#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use proptest::prelude::*;

use tollgate::http::chunked::{write_chunk_size, Chunk, ChunkedDecoder};
use tollgate::http::request::{self, RequestHead};
use tollgate::http::response::{self, ResponseHead};
use tollgate::http::{BodyKind, Limits};
use tollgate::router::{RouteKey, RouteTable};

/// Decodes `input` fed in pieces whose sizes cycle through `splits`.
fn decode(input: &[u8], splits: &[usize]) -> Result<(Vec<u8>, bool), ()> {
    let mut dec = ChunkedDecoder::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut data = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    loop {
        if fed < input.len() {
            let step = splits[i % splits.len()].max(1);
            i += 1;
            let end = (fed + step).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
        }
        let (n, chunk) = dec.decode(&buf).map_err(|_| ())?;
        match chunk {
            Some(Chunk::Data(r)) => data.extend_from_slice(&buf[r]),
            Some(Chunk::End) => return Ok((data, true)),
            None => {}
        }
        buf.drain(..n);
        if fed == input.len() && n == 0 {
            return Ok((data, false));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunked_round_trips_in_any_split(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..12),
        splits in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut wire = bytes::BytesMut::new();
        let mut body = Vec::new();
        for c in &chunks {
            write_chunk_size(&mut wire, c.len());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
            body.extend_from_slice(c);
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let (data, done) = decode(&wire, &splits).expect("valid chunked body");
        prop_assert!(done);
        prop_assert_eq!(data, body);
    }

    #[test]
    fn chunked_decoder_never_panics(input in prop::collection::vec(any::<u8>(), 0..512), splits in prop::collection::vec(1usize..32, 1..4)) {
        let _ = decode(&input, &splits);
    }

    #[test]
    fn request_parser_never_panics(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut head = RequestHead::default();
        let mut input = input;
        let _ = request::parse(&mut input, &Limits::default(), b"x-request-id", &mut head);
    }

    #[test]
    fn request_parser_never_panics_on_near_valid_heads(
        method in "[A-Z]{1,7}",
        path in "/[ -~]{0,40}",
        headers in prop::collection::vec(("[!-9;-~]{1,12}", "[ -~\t]{0,30}"), 0..8),
        version in prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1\n", "http/1.1"]),
    ) {
        let mut raw = format!("{method} {path} {version}\r\n");
        for (n, v) in &headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let mut head = RequestHead::default();
        let mut buf = raw.clone().into_bytes();
        if let Ok(Some(n)) = request::parse(&mut buf, &Limits::default(), b"x-request-id", &mut head) {
            // Whatever is accepted is self-consistent, and its path is
            // normal: a second pass changes nothing.
            prop_assert_eq!(n, raw.len());
            let path = head.path(&buf).to_vec();
            prop_assert!(path.starts_with(b"/"));
            prop_assert!(!path.windows(2).any(|w| w == b"//"));
            let mut again = path.clone();
            let mut again_head = RequestHead::default();
            let mut line = format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", String::from_utf8_lossy(&again)).into_bytes();
            if let Ok(Some(_)) = request::parse(&mut line, &Limits::default(), b"x-request-id", &mut again_head) {
                again = again_head.path(&line).to_vec();
            }
            prop_assert_eq!(again, path);
            if let BodyKind::Length(len) = head.body {
                prop_assert!(len > 0);
            }
        }
    }

    #[test]
    fn response_parser_never_panics(input in prop::collection::vec(any::<u8>(), 0..2048), head_req in any::<bool>()) {
        let mut head = ResponseHead::default();
        let _ = response::parse(&input, 65536, head_req, b"x-request-id", &mut head);
    }

    #[test]
    fn router_never_panics_and_params_lie_inside_the_path(path in "/[a-z0-9/._-]{0,60}", method in prop::sample::select(vec!["GET", "POST", "HEAD", "DELETE"])) {
        let mut table = RouteTable::new();
        for k in ["GET /a/{b}/c", "ANY /a/{proxy+}", "POST /x/y", "GET /{p}", "$default"] {
            table.insert(&k.parse::<RouteKey>().expect("key")).expect("insert");
        }
        let m = table.find(method.as_bytes(), path.as_bytes()).expect("$default catches everything");
        for i in 0..m.params.len() {
            let r = m.params.get(i).expect("param");
            prop_assert!(r.start <= r.end && r.end <= path.len());
        }
    }
}
