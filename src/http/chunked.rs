//! Incremental chunked transfer-coding decoder (RFC 9112 §7.1).
//!
//! Fed whatever bytes have arrived, it consumes framing and reports each run
//! of body data as a range of the input, so the caller can forward or
//! discard data without the decoder copying it. It is strict: hex sizes
//! only (no sign, no whitespace, at most 16 digits), CRLF everywhere (a bare
//! LF or a CR not followed by LF is an error), bounded extensions and
//! trailers. Trailer fields are consumed and dropped.

use std::ops::Range;

/// Longest chunk-size line extension we accept, in bytes.
const MAX_EXTENSION: usize = 1024;
/// Largest trailer section we accept, in bytes.
const MAX_TRAILERS: usize = 8 * 1024;

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size too large")]
    SizeOverflow,
    #[error("chunk extension too long")]
    Extension,
    #[error("missing CRLF in chunked body")]
    LineEnding,
    #[error("trailer section too large or malformed")]
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size digits (BWS before `;`).
    SizeWs,
    /// After `;` until CR.
    Extension {
        len: usize,
    },
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name (token characters up to `:`).
    TrailerLine,
    /// Inside a trailer field's value, up to CR.
    TrailerValue,
    /// Expecting LF after a trailer line's CR.
    TrailerLf,
    /// Expecting LF of the final empty line.
    EndLf,
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Body data at this range of the input.
    Data(Range<usize>),
    /// The body is complete.
    End,
}

/// Decoder state for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    trailer_bytes: usize,
    /// Total data bytes decoded so far.
    pub data_len: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            trailer_bytes: 0,
            data_len: 0,
        }
    }

    /// True once the terminating empty line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing from `input` up to the next run of data or the end.
    /// Returns bytes consumed and what was found; `(n, None)` with
    /// `n == input.len()` means more input is needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Chunk>), ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(d) = super::hex_digit(b) {
                        if digits >= 16 {
                            return Err(ChunkedError::SizeOverflow);
                        }
                        self.remaining = (self.remaining << 4) | u64::from(d);
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkedError::Size);
                    } else if b == b';' {
                        self.state = State::Extension { len: 0 };
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b' ' || b == b'\t' {
                        self.state = State::SizeWs;
                    } else {
                        return Err(ChunkedError::Size);
                    }
                }
                State::SizeWs => {
                    // RFC 9112 §7.1.1: BWS is allowed only before an extension.
                    if b == b';' {
                        self.state = State::Extension { len: 0 };
                    } else if b != b' ' && b != b'\t' {
                        return Err(ChunkedError::Size);
                    }
                }
                State::Extension { len } => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(ChunkedError::LineEnding);
                    } else if len >= MAX_EXTENSION {
                        return Err(ChunkedError::Extension);
                    } else {
                        self.state = State::Extension { len: len + 1 };
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::LineEnding);
                    }
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.remaining) as usize;
                    self.remaining -= take as u64;
                    self.data_len += take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((i + take, Some(Chunk::Data(i..i + take))));
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkedError::LineEnding);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::LineEnding);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b'\n' || b == b' ' || b == b'\t' {
                        // Bare LF, or obs-fold continuation.
                        return Err(ChunkedError::Trailers);
                    } else if super::is_tchar(b) {
                        self.bump_trailer()?;
                        self.state = State::TrailerLine;
                    } else {
                        return Err(ChunkedError::Trailers);
                    }
                }
                State::TrailerLine => {
                    // A field name, then `:`: a line without one (or with
                    // anything else in the name, whitespace before the
                    // colon included) is malformed, as in a head.
                    self.bump_trailer()?;
                    if b == b':' {
                        self.state = State::TrailerValue;
                    } else if !super::is_tchar(b) {
                        return Err(ChunkedError::Trailers);
                    }
                }
                State::TrailerValue => {
                    self.bump_trailer()?;
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if b == b'\n' {
                        return Err(ChunkedError::LineEnding);
                    } else if b < 0x20 && b != b'\t' || b == 0x7f {
                        return Err(ChunkedError::Trailers);
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::LineEnding);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::LineEnding);
                    }
                    self.state = State::Done;
                    return Ok((i + 1, Some(Chunk::End)));
                }
                State::Done => return Ok((i, Some(Chunk::End))),
            }
            i += 1;
        }
        if self.state == State::Done {
            return Ok((i, Some(Chunk::End)));
        }
        Ok((i, None))
    }

    fn bump_trailer(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkedError::Trailers);
        }
        Ok(())
    }
}

/// Writes a chunk-size line for `len` bytes of data into `out`.
pub fn write_chunk_size(out: &mut bytes::BytesMut, len: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 18];
    let mut n = len;
    let mut pos = tmp.len() - 2;
    tmp[tmp.len() - 2] = b'\r';
    tmp[tmp.len() - 1] = b'\n';
    loop {
        pos -= 1;
        tmp[pos] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[pos..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the data.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            if fed < input.len() {
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            let (n, chunk) = d.decode(&buf)?;
            match chunk {
                Some(Chunk::Data(r)) => data.extend_from_slice(&buf[r]),
                Some(Chunk::End) => {
                    buf.drain(..n);
                    return Ok((data, true));
                }
                None => {}
            }
            buf.drain(..n);
            if fed == input.len() && buf.is_empty() && n == 0 {
                return Ok((data, d.is_done()));
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: v\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let (data, done) = decode_all(body, step).expect("valid");
            assert_eq!(data, b"hello, world", "step {step}");
            assert!(done);
        }
    }

    #[test]
    fn whitespace_is_allowed_only_before_an_extension() {
        let (data, done) = decode_all(b"3 ;a=b\r\nabc\r\n0\r\n\r\n", 100).expect("BWS before ;");
        assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
        assert!(decode_all(b"3 \r\nabc\r\n0\r\n\r\n", 100).is_err());
    }

    #[test]
    fn stops_exactly_at_the_end() {
        let mut d = ChunkedDecoder::new();
        let input = b"0\r\n\r\nGET / HTTP/1.1\r\n";
        let (n, c) = d.decode(input).expect("valid");
        assert_eq!(c, Some(Chunk::End));
        assert_eq!(n, 5);
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (data, done) = decode_all(b"5\r\nhel", 100).expect("valid so far");
        assert_eq!(data, b"hel");
        assert!(!done);
    }

    #[test]
    fn rejects_bad_framing() {
        let bad: &[&[u8]] = &[
            b"x\r\n",
            b"-5\r\nhello\r\n",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"11111111111111111\r\n",
            b"0x5\r\n",
            // Trailer lines are header fields: name, colon, value.
            b"0\r\nno colon here\r\n\r\n",
            b"0\r\nX-Trailer\r\n\r\n",
            b"0\r\nX Trailer: v\r\n\r\n",
            b"0\r\nX-Trailer : v\r\n\r\n",
            b"0\r\n:v\r\n\r\n",
            b"0\r\nX: a\x01b\r\n\r\n",
        ];
        for b in bad {
            assert!(
                decode_all(b, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn chunk_size_line() {
        for (n, s) in [(0usize, "0\r\n"), (10, "a\r\n"), (4096, "1000\r\n")] {
            let mut out = bytes::BytesMut::new();
            write_chunk_size(&mut out, n);
            assert_eq!(&out[..], s.as_bytes());
        }
    }
}
