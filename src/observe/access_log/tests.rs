//! Tests of the access log's formats: variables, presets, escaping of
//! hostile input (checked with a small JSON and CSV reader), time.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;

// -- helpers ---------------------------------------------------------

fn full() -> LogRecord<'static> {
    LogRecord {
        request_id: b"c0ffee-1",
        source_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        time: UNIX_EPOCH + Duration::from_millis(1_764_561_865_123),
        method: b"GET",
        route_key: Some("GET /pets/{id}"),
        path: b"/prod/pets/42",
        status: 200,
        http10: false,
        response_length: 1234,
        latency: Duration::from_micros(15_900),
        integration_latency: Some(Duration::from_millis(12)),
        integration_status: Some(201),
        error_message: Some("boom"),
        user_agent: Some(b"curl/8.5.0"),
        stage: Some("prod"),
        api: Some("petstore"),
        host: Some(b"api.example.com"),
        api_key_id: Some("partner-a"),
        cache: Some(true),
        canary: false,
        client_cert: None,
    }
}

fn bare() -> LogRecord<'static> {
    LogRecord {
        route_key: None,
        integration_latency: None,
        integration_status: None,
        error_message: None,
        user_agent: None,
        stage: None,
        api: None,
        host: None,
        api_key_id: None,
        cache: None,
        ..full()
    }
}

fn render(format: &str, rec: &LogRecord<'_>) -> String {
    let f = Format::parse(format).expect("format parses");
    let mut out = Vec::new();
    f.render(rec, &mut out);
    String::from_utf8(out).expect("test lines are UTF-8")
}

fn render_bytes(format: &str, rec: &LogRecord<'_>) -> Vec<u8> {
    let f = Format::parse(format).expect("format parses");
    let mut out = Vec::new();
    f.render(rec, &mut out);
    out
}

fn unknown(name: &str) -> Result<(), FormatError> {
    Err(FormatError::UnknownVariable(name.to_string()))
}

fn parse_err(text: &str) -> Result<(), FormatError> {
    Format::parse(text).map(|_| ())
}

/// Undoes `\xHH` escapes (default and CSV modes).
fn unescape_hex(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            assert_eq!(s.get(i + 1), Some(&b'x'), "bare backslash in {s:?}");
            let hex = std::str::from_utf8(&s[i + 2..i + 4]).expect("hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Splits one CSV record (RFC 4180, no line break inside).
fn csv_fields(line: &[u8]) -> Vec<Vec<u8>> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = Vec::new();
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match (line.get(i), line.get(i + 1)) {
                    (Some(b'"'), Some(b'"')) => {
                        field.push(b'"');
                        i += 2;
                    }
                    (Some(b'"'), _) => {
                        i += 1;
                        break;
                    }
                    (Some(&b), _) => {
                        field.push(b);
                        i += 1;
                    }
                    (None, _) => panic!("unterminated quoted field in {line:?}"),
                }
            }
        } else {
            while let Some(&b) = line.get(i) {
                if b == b',' {
                    break;
                }
                assert_ne!(b, b'"', "quote in unquoted field");
                field.push(b);
                i += 1;
            }
        }
        fields.push(field);
        match line.get(i) {
            Some(b',') => i += 1,
            None => return fields,
            Some(b) => panic!("garbage {b} after quoted field in {line:?}"),
        }
    }
}

/// A JSON value, as far as the tests need one.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn get(&self, key: &str) -> &J {
        match self {
            J::Obj(m) => m
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key}")),
            _ => panic!("not an object"),
        }
    }

    fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

/// A strict JSON parser (RFC 8259) for checking rendered lines.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

fn parse_json(text: &[u8]) -> Result<J, String> {
    std::str::from_utf8(text).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut p = Json { s: text, i: 0 };
    let v = p.value()?;
    if p.i != text.len() {
        return Err(format!("trailing bytes at {}", p.i));
    }
    Ok(v)
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at {}", b as char, self.i))
        }
    }

    fn word(&mut self, w: &str, v: J) -> Result<J, String> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<J, String> {
        self.ws();
        let v = match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        m.push((k, self.value()?));
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(format!("bad object at {}", self.i)),
                        }
                    }
                }
                J::Obj(m)
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        a.push(self.value()?);
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(format!("bad array at {}", self.i)),
                        }
                    }
                }
                J::Arr(a)
            }
            Some(b'"') => J::Str(self.string()?),
            Some(b't') => self.word("true", J::Bool(true))?,
            Some(b'f') => self.word("false", J::Bool(false))?,
            Some(b'n') => self.word("null", J::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return Err(format!("no value at {}", self.i)),
        };
        self.ws();
        Ok(v)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<J, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return Err(format!("bad number at {start}"));
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(format!("bad fraction at {start}"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(format!("bad exponent at {start}"));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        Ok(J::Num(text.to_string()))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u at {}", self.i))?;
        self.i += 4;
        Ok(h)
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let b = self.peek().ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err("lone high surrogate".into());
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or("bad code point")?
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    };
                    out.push(c);
                }
                0..=0x1f => return Err(format!("raw control byte at {}", self.i - 1)),
                _ => {
                    // The line was checked to be UTF-8: copy one char.
                    let start = self.i - 1;
                    let len = match b {
                        0..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    let ch = std::str::from_utf8(&self.s[start..start + len])
                        .map_err(|e| e.to_string())?;
                    out.push_str(ch);
                    self.i = start + len;
                }
            }
        }
    }
}

/// The line without its newline, checking there is exactly one, last.
fn one_line(out: &[u8]) -> &[u8] {
    assert_eq!(out.last(), Some(&b'\n'), "line ends in a newline");
    let body = &out[..out.len() - 1];
    assert!(
        !body.contains(&b'\n') && !body.contains(&b'\r'),
        "one line: {:?}",
        String::from_utf8_lossy(out)
    );
    body
}

// -- variables and parsing -------------------------------------------

const ALL_VARS: &str = "$context.requestId|$context.extendedRequestId|\
$context.identity.sourceIp|$context.requestTime|$context.requestTimeEpoch|\
$context.httpMethod|$context.routeKey|$context.path|$context.status|\
$context.protocol|$context.responseLength|$context.responseLatency|\
$context.integrationLatency|$context.integration.latency|\
$context.integrationStatus|$context.integration.status|$context.error.message|\
$context.identity.userAgent|$context.userAgent|$context.stage|$context.apiId|\
$context.domainName|$context.identity.apiKeyId|$context.cacheStatus|\
$context.isCanaryRequest|$context.identity.clientCert.subjectDN|\
$context.identity.clientCert.issuerDN|$context.identity.clientCert.serialNumber|\
$context.identity.clientCert.validity.notBefore|\
$context.identity.clientCert.validity.notAfter";

#[test]
fn every_variable_renders() {
    assert_eq!(
        render(ALL_VARS, &full()),
        "c0ffee-1|c0ffee-1|203.0.113.7|01/Dec/2025:04:04:25 +0000|1764561865123|\
GET|GET /pets/{id}|/prod/pets/42|200|HTTP/1.1|1234|15|12|12|201|201|boom|\
curl/8.5.0|curl/8.5.0|prod|petstore|api.example.com|partner-a|hit|false|-|-|-|-|-\n"
    );
    // Every name of the table is in the test's template.
    assert_eq!(VARS.len(), ALL_VARS.split('|').count());
    for (name, _) in VARS {
        assert!(ALL_VARS.contains(&format!("$context.{name}|")) || ALL_VARS.ends_with(name));
    }
}

#[test]
fn client_certificate_variables() {
    let cert = crate::tls::ClientCert {
        subject: "CN=client one,O=Example".into(),
        issuer: "CN=Test CA".into(),
        serial: "0a:1b".into(),
        not_before: "2026-01-02T00:00:00Z".into(),
        not_after: "2030-03-04T00:00:00Z".into(),
    };
    let f = "$context.identity.clientCert.subjectDN|$context.identity.clientCert.issuerDN|\
$context.identity.clientCert.serialNumber|$context.identity.clientCert.validity.notBefore|\
$context.identity.clientCert.validity.notAfter";
    let rec = LogRecord {
        client_cert: Some(&cert),
        ..bare()
    };
    assert_eq!(
        render(f, &rec),
        "CN=client one,O=Example|CN=Test CA|0a:1b|2026-01-02T00:00:00Z|2030-03-04T00:00:00Z\n"
    );
    assert_eq!(render(f, &bare()), "-|-|-|-|-\n");
}

#[test]
fn absent_values_render_as_dash() {
    assert_eq!(
        render(ALL_VARS, &bare()),
        "c0ffee-1|c0ffee-1|203.0.113.7|01/Dec/2025:04:04:25 +0000|1764561865123|\
GET|-|/prod/pets/42|200|HTTP/1.1|1234|15|-|-|-|-|-|-|-|-|-|-|-|-|false|-|-|-|-|-\n"
    );
    let rec = LogRecord {
        http10: true,
        cache: Some(false),
        ..bare()
    };
    assert_eq!(
        render("$context.protocol $context.cacheStatus", &rec),
        "HTTP/1.0 miss\n"
    );
}

#[test]
fn source_ip_v6_and_mapped_v4() {
    let v6 = LogRecord {
        source_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ..full()
    };
    assert_eq!(render("$context.identity.sourceIp", &v6), "2001:db8::1\n");
    let mapped = LogRecord {
        source_ip: IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped()),
        ..full()
    };
    assert_eq!(render("$context.identity.sourceIp", &mapped), "192.0.2.9\n");
}

#[test]
fn literal_text_and_longest_names() {
    assert_eq!(
        render("t=$context.requestTimeEpoch s=$context.status.", &full()),
        "t=1764561865123 s=200.\n"
    );
    assert_eq!(
        render(
            "[$context.integration.status/$context.integration.latency]",
            &full()
        ),
        "[201/12]\n"
    );
    assert_eq!(
        render("$context.requestId-$context.stage", &full()),
        "c0ffee-1-prod\n"
    );
    assert_eq!(render("no variables", &full()), "no variables\n");
}

#[test]
fn bad_formats_are_refused_with_the_name() {
    assert_eq!(parse_err("ip $context.foo end"), unknown("$context.foo"));
    assert_eq!(parse_err("$context.statusX"), unknown("$context.statusX"));
    assert_eq!(
        parse_err("$context.request_id"),
        unknown("$context.request_id")
    );
    assert_eq!(
        parse_err("$context.integration.foo"),
        unknown("$context.integration.foo")
    );
    assert_eq!(
        parse_err("$context.integration"),
        unknown("$context.integration")
    );
    assert_eq!(parse_err("a $context. b"), unknown("$context"));
    assert_eq!(parse_err("$requestId"), unknown("$requestId"));
    assert_eq!(parse_err("cost $5"), unknown("$5"));
    assert_eq!(parse_err("end $"), unknown("$"));
    assert_eq!(parse_err("${context.path} x"), unknown("${context.path}"));
    assert_eq!(parse_err(""), Err(FormatError::Empty));
    assert_eq!(parse_err("  \t"), Err(FormatError::Empty));
    assert_eq!(parse_err("$context.path\n"), Err(FormatError::LineBreak));
    assert_eq!(parse_err("a\rb"), Err(FormatError::LineBreak));
    assert_eq!(
        parse_err("{\"p\":\"$context.path}"),
        Err(FormatError::UnterminatedJsonString)
    );
    assert_eq!(
        FormatError::UnknownVariable("$context.foo".into()).to_string(),
        "unknown access log variable `$context.foo`"
    );
}

// -- presets -----------------------------------------------------------

#[test]
fn clf_preset() {
    assert_eq!(
        render("clf", &full()),
        "203.0.113.7 - - [01/Dec/2025:04:04:25 +0000] \"GET /prod/pets/42 HTTP/1.1\" \
200 1234 c0ffee-1\n"
    );
}

#[test]
fn json_preset() {
    let line = render("json", &full());
    assert_eq!(
        line,
        "{\"requestId\":\"c0ffee-1\",\"ip\":\"203.0.113.7\",\
\"requestTime\":\"01/Dec/2025:04:04:25 +0000\",\"httpMethod\":\"GET\",\
\"routeKey\":\"GET /pets/{id}\",\"path\":\"/prod/pets/42\",\"status\":200,\
\"protocol\":\"HTTP/1.1\",\"responseLength\":1234,\"responseLatency\":15,\
\"integrationLatency\":12,\"integrationStatus\":201,\"errorMessage\":\"boom\",\
\"userAgent\":\"curl/8.5.0\",\"stage\":\"prod\",\"api\":\"petstore\"}\n"
    );
    assert!(parse_json(one_line(line.as_bytes())).is_ok());
}

/// The general renderer of the `json` preset's template.
fn render_json_template(rec: &LogRecord<'_>) -> Vec<u8> {
    let f = compile(JSON, Mode::Json).expect("preset compiles");
    assert!(!f.json_preset);
    let mut out = Vec::new();
    f.render(rec, &mut out);
    out
}

#[test]
fn json_preset_unrolled_matches_the_template() {
    let preset = Format::parse("json").expect("preset");
    assert!(preset.json_preset);
    let v6 = IpAddr::V6("2001:db8::7".parse().expect("address"));
    let records = [
        full(),
        bare(),
        LogRecord {
            source_ip: v6,
            http10: true,
            integration_latency: None,
            integration_status: None,
            route_key: None,
            ..full()
        },
        LogRecord {
            path: b"/a\"b\\c\n\x01\x7f\xff\xc3\xa9",
            user_agent: Some(b"\"quoted\" \t agent"),
            error_message: Some("bad \"gateway\""),
            ..full()
        },
    ];
    for rec in &records {
        let mut out = Vec::new();
        preset.render(rec, &mut out);
        assert_eq!(out, render_json_template(rec));
    }
}

#[test]
fn json_preset_absent_values_are_null() {
    let line = render("json", &bare());
    assert_eq!(
        line,
        "{\"requestId\":\"c0ffee-1\",\"ip\":\"203.0.113.7\",\
\"requestTime\":\"01/Dec/2025:04:04:25 +0000\",\"httpMethod\":\"GET\",\
\"routeKey\":null,\"path\":\"/prod/pets/42\",\"status\":200,\
\"protocol\":\"HTTP/1.1\",\"responseLength\":1234,\"responseLatency\":15,\
\"integrationLatency\":null,\"integrationStatus\":null,\"errorMessage\":null,\
\"userAgent\":null,\"stage\":null,\"api\":null}\n"
    );
    let j = parse_json(one_line(line.as_bytes())).expect("valid JSON");
    assert_eq!(j.get("routeKey"), &J::Null);
    assert_eq!(j.get("integrationLatency"), &J::Null);
    assert_eq!(j.get("status"), &J::Num("200".into()));
}

#[test]
fn csv_preset() {
    assert_eq!(
        render("csv", &full()),
        "c0ffee-1,203.0.113.7,01/Dec/2025:04:04:25 +0000,GET,GET /pets/{id},\
/prod/pets/42,200,HTTP/1.1,1234,15,12,201,boom,curl/8.5.0,prod,petstore\n"
    );
    assert_eq!(
        render("csv", &bare()),
        "c0ffee-1,203.0.113.7,01/Dec/2025:04:04:25 +0000,GET,-,\
/prod/pets/42,200,HTTP/1.1,1234,15,-,-,-,-,-,-\n"
    );
}

#[test]
fn json_templates_place_variables() {
    let t = "  {\"req\":\"$context.httpMethod $context.path\",\
\"s\":\"$context.status\",\"n\":$context.status,\
\"ip\":$context.identity.sourceIp,\"e\":\"$context.error.message\",\
\"e2\":$context.error.message,\"e3\":\"x$context.error.message\",\
\"il\":\"$context.integrationLatency\",\"t\":$context.requestTime,\
\"k\\\"$context.stage\":1}";
    let line = render(t, &bare());
    assert_eq!(
        line,
        "  {\"req\":\"GET /prod/pets/42\",\"s\":\"200\",\"n\":200,\
\"ip\":\"203.0.113.7\",\"e\":null,\"e2\":null,\"e3\":\"x-\",\"il\":null,\
\"t\":\"01/Dec/2025:04:04:25 +0000\",\"k\\\"-\":1}\n"
    );
    assert!(parse_json(one_line(line.as_bytes())).is_ok());
    // Not JSON: a template that does not start with `{`.
    assert_eq!(render("\"$context.path\"", &bare()), "\"/prod/pets/42\"\n");
}

// -- escaping ------------------------------------------------------------

const HOSTILE: &[u8] = b"/a\"b\\c\r\nd\t\x01\x7f\xff\xc3\xa9\xe2\x82";

#[test]
fn json_escaping_exact() {
    let mut out = Vec::new();
    escape_json(HOSTILE, &mut out);
    assert_eq!(
        String::from_utf8(out).expect("UTF-8"),
        r#"/a\"b\\c\r\nd\t\u0001\u007f\ufffdé\ufffd"#
    );
}

#[test]
fn json_escaping_of_hostile_input_keeps_the_line_json() {
    let rec = LogRecord {
        method: b"G\"E\nT",
        path: HOSTILE,
        user_agent: Some(b"\x00\x1b[31mred\xed\xa0\x80 \xf0\x9f\x98\x80"),
        host: Some(b"\xc3"),
        error_message: Some("quote \" backslash \\ \u{2028} é"),
        route_key: Some("GET /{proxy+}"),
        ..full()
    };
    let out = render_bytes("json", &rec);
    let j = parse_json(one_line(&out)).expect("valid JSON");
    assert_eq!(j.get("path").str(), String::from_utf8_lossy(HOSTILE));
    assert_eq!(j.get("httpMethod").str(), "G\"E\nT");
    assert_eq!(
        j.get("userAgent").str(),
        String::from_utf8_lossy(b"\x00\x1b[31mred\xed\xa0\x80 \xf0\x9f\x98\x80")
    );
    assert_eq!(
        j.get("errorMessage").str(),
        "quote \" backslash \\ \u{2028} é"
    );
    let host = render_bytes("{\"h\":\"$context.domainName\"}", &rec);
    assert_eq!(host, b"{\"h\":\"\\ufffd\"}\n");
}

#[test]
fn default_escaping_exact() {
    let mut out = Vec::new();
    escape_default(HOSTILE, &mut out);
    assert_eq!(
        String::from_utf8(out).expect("ASCII"),
        r"/a\x22b\x5Cc\x0D\x0Ad\x09\x01\x7F\xFF\xC3\xA9\xE2\x82"
    );
    let rec = LogRecord {
        path: b"/a\"b",
        method: b"GET\r\nX: y",
        ..full()
    };
    assert_eq!(
        render("clf", &rec),
        "203.0.113.7 - - [01/Dec/2025:04:04:25 +0000] \"GET\\x0D\\x0AX: y /a\\x22b \
HTTP/1.1\" 200 1234 c0ffee-1\n"
    );
}

#[test]
fn csv_escaping_exact() {
    let csv = |v: &[u8]| {
        let mut out = Vec::new();
        escape_csv(v, &mut out);
        String::from_utf8(out).expect("UTF-8")
    };
    assert_eq!(
        csv(HOSTILE),
        r#""/a""b\x5Cc\x0D\x0Ad\x09\x01\x7F\xFFé\xE2\x82""#
    );
    assert_eq!(csv(b"a,b"), "\"a,b\"");
    assert_eq!(csv(b"\"\""), "\"\"\"\"\"\"");
    assert_eq!(csv(b"plain text"), "plain text");
    assert_eq!(csv(b"tab\there"), r"tab\x09here");
    assert_eq!(csv(b""), "");
    let rec = LogRecord {
        user_agent: Some(b"Mozilla/5.0 (X11, Linux)"),
        ..full()
    };
    let out = render_bytes("csv", &rec);
    let fields = csv_fields(one_line(&out));
    assert_eq!(fields.len(), 16);
    assert_eq!(fields[13], b"Mozilla/5.0 (X11, Linux)");
}

proptest! {
    /// Whatever the client sends, every mode gives one line that
    /// parses and gives the value back (lossily for JSON).
    #[test]
    fn hostile_bytes_round_trip(
        path in vec(any::<u8>(), 0..64),
        ua in vec(any::<u8>(), 0..100),
        method in vec(any::<u8>(), 0..8),
        err in vec(any::<char>(), 0..12),
    ) {
        let err: String = err.into_iter().collect();
        let rec = LogRecord {
            path: &path,
            method: &method,
            user_agent: Some(&ua),
            error_message: Some(&err),
            ..full()
        };

        let out = render_bytes("json", &rec);
        prop_assert_eq!(&out, &render_json_template(&rec));
        let j = parse_json(one_line(&out)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(j.get("path").str(), String::from_utf8_lossy(&path));
        prop_assert_eq!(j.get("userAgent").str(), String::from_utf8_lossy(&ua));
        prop_assert_eq!(j.get("httpMethod").str(), String::from_utf8_lossy(&method));
        prop_assert_eq!(j.get("errorMessage").str(), err.as_str());

        let out = render_bytes("csv", &rec);
        let fields = csv_fields(one_line(&out));
        prop_assert_eq!(fields.len(), 16);
        prop_assert_eq!(unescape_hex(&fields[3]), method.clone());
        prop_assert_eq!(unescape_hex(&fields[5]), path.clone());
        prop_assert_eq!(unescape_hex(&fields[13]), ua.clone());
        prop_assert_eq!(unescape_hex(&fields[12]), err.as_bytes());

        let out = render_bytes("$context.path", &rec);
        let line = one_line(&out);
        prop_assert!(line.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"'));
        prop_assert_eq!(unescape_hex(line), path.clone());

        let out = render_bytes("clf", &rec);
        let line = one_line(&out);
        prop_assert_eq!(line.iter().filter(|&&b| b == b'"').count(), 2);
    }
}

// -- time ----------------------------------------------------------------

#[test]
fn clf_time_text() {
    let text = |secs| String::from_utf8(clf_time(secs).to_vec()).expect("ASCII");
    assert_eq!(text(1_764_561_865), "01/Dec/2025:04:04:25 +0000");
    assert_eq!(text(0), "01/Jan/1970:00:00:00 +0000");
    assert_eq!(text(951_868_800), "01/Mar/2000:00:00:00 +0000");
    assert_eq!(text(1_709_208_000), "29/Feb/2024:12:00:00 +0000");
    assert_eq!(text(1_234_567_890), "13/Feb/2009:23:31:30 +0000");
    assert_eq!(text(MAX_CLF_SECS), "31/Dec/9999:23:59:59 +0000");

    let mut cache = TimeCache::new();
    assert_eq!(cache.clf(1_764_561_865), b"01/Dec/2025:04:04:25 +0000");
    assert_eq!(cache.clf(1_764_561_865), b"01/Dec/2025:04:04:25 +0000");
    assert_eq!(cache.clf(1_764_561_866), b"01/Dec/2025:04:04:26 +0000");
    assert_eq!(cache.clf(u64::MAX), b"31/Dec/9999:23:59:59 +0000");

    let before_epoch = LogRecord {
        time: UNIX_EPOCH - Duration::from_secs(5),
        ..full()
    };
    assert_eq!(
        render(
            "$context.requestTime $context.requestTimeEpoch",
            &before_epoch
        ),
        "01/Jan/1970:00:00:00 +0000 0\n"
    );
}
