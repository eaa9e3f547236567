//! A small, bounded JSON reader used for RECENT files.
//!
//! Why not plain `serde_json::Value`: numbers would be turned into `f64`
//! (distinct epochs with many digits could collapse), and we want to read
//! the potentially large `recent` array without building a generic tree.
//! The cursor keeps number tokens as raw text and records byte spans so
//! that unknown `meta` members can be handed to `serde_json` verbatim.
//!
//! Limits: nesting depth [`MAX_JSON_DEPTH`], string length
//! [`MAX_JSON_STRING_BYTES`], items per container [`MAX_JSON_CONTAINER_ITEMS`].

/// Deepest nesting of arrays/objects accepted anywhere in the document.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest decoded string.
pub const MAX_JSON_STRING_BYTES: usize = 1 << 20;
/// Most members/elements in one generic (meta) container.
pub const MAX_JSON_CONTAINER_ITEMS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub offset: usize,
    pub msg: String,
}

pub(crate) type JResult<T> = Result<T, JsonError>;

/// A generic value (used for small things: meta members and event fields).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    /// Raw number token, already checked against the JSON grammar.
    Num(&'a str),
    Str(String),
    Arr(Vec<Spanned<'a>>),
    Obj(Vec<(String, Spanned<'a>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<'a> {
    pub v: Json<'a>,
    pub start: usize,
    pub end: usize,
}

impl Json<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Num(_) => "number",
            Json::Str(_) => "string",
            Json::Arr(_) => "array",
            Json::Obj(_) => "object",
        }
    }
}

pub(crate) struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    pub i: usize,
    depth: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            text,
            b: text.as_bytes(),
            i: 0,
            depth: 0,
        }
    }

    pub fn err<T>(&self, msg: impl Into<String>) -> JResult<T> {
        Err(JsonError {
            offset: self.i,
            msg: msg.into(),
        })
    }

    pub fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    pub fn expect(&mut self, c: u8) -> JResult<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            Some(x) => self.err(format!(
                "expected '{}' but found '{}'",
                c as char,
                x.escape_ascii()
            )),
            None => self.err(format!("expected '{}' but the input ended", c as char)),
        }
    }

    /// Enter an array/object: consume the opening bracket, track depth.
    pub fn open(&mut self, c: u8) -> JResult<()> {
        self.expect(c)?;
        self.depth += 1;
        if self.depth > MAX_JSON_DEPTH {
            return self.err(format!("nesting deeper than {MAX_JSON_DEPTH}"));
        }
        Ok(())
    }

    /// After an element: returns `true` if another element follows
    /// (consumed a ','), `false` if the container closed (consumed `close`).
    pub fn next_sep(&mut self, close: u8) -> JResult<bool> {
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                self.depth = self.depth.saturating_sub(1);
                Ok(false)
            }
            Some(c) => self.err(format!(
                "expected ',' or '{}' but found '{}'",
                close as char,
                c.escape_ascii()
            )),
            None => self.err("input ended inside a container"),
        }
    }

    /// Right after `open`: returns `true` if the container is empty (and
    /// consumes the closing bracket).
    pub fn empty_close(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.i += 1;
            self.depth = self.depth.saturating_sub(1);
            true
        } else {
            false
        }
    }

    /// Object key followed by ':'.
    pub fn key(&mut self) -> JResult<String> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string object key");
        }
        let k = self.string()?;
        self.expect(b':')?;
        Ok(k)
    }

    pub fn string(&mut self) -> JResult<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            // fast path: copy unescaped run
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // text is valid UTF-8 and we stopped on ASCII bytes: boundaries ok
            out.push_str(self.text.get(start..self.i).unwrap_or(""));
            if out.len() > MAX_JSON_STRING_BYTES {
                return self.err(format!("string longer than {MAX_JSON_STRING_BYTES} bytes"));
            }
            match self.b.get(self.i).copied() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let e = match self.b.get(self.i).copied() {
                        Some(e) => e,
                        None => return self.err("unterminated escape"),
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i) != Some(&b'\\')
                                    || self.b.get(self.i + 1) != Some(&b'u')
                                {
                                    return self.err("lone high surrogate in \\u escape");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("invalid low surrogate in \\u escape");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return self.err("lone low surrogate in \\u escape");
                            } else {
                                hi
                            };
                            match char::from_u32(cp) {
                                Some(ch) => out.push(ch),
                                None => return self.err("invalid \\u escape"),
                            }
                        }
                        _ => return self.err(format!("invalid escape '\\{}'", e.escape_ascii())),
                    }
                }
                Some(_) => return self.err("raw control character in string"),
            }
        }
    }

    fn hex4(&mut self) -> JResult<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            let c = match self.b.get(self.i) {
                Some(&c) => c,
                None => return self.err("truncated \\u escape"),
            };
            let d = match (c as char).to_digit(16) {
                Some(d) => d,
                None => return self.err("non-hex digit in \\u escape"),
            };
            v = v * 16 + d;
            self.i += 1;
        }
        Ok(v)
    }

    /// A number token, returned as raw text.
    pub fn number(&mut self) -> JResult<&'a str> {
        self.ws();
        let start = self.i;
        let digits = |s: &mut Self| {
            let st = s.i;
            while s.b.get(s.i).is_some_and(|c| c.is_ascii_digit()) {
                s.i += 1;
            }
            s.i - st
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(c) if c.is_ascii_digit() => {
                digits(self);
            }
            _ => return self.err("invalid number"),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return self.err("invalid number: no digits after '.'");
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return self.err("invalid number: no digits in exponent");
            }
        }
        Ok(self.text.get(start..self.i).unwrap_or(""))
    }

    fn literal(&mut self, word: &str) -> JResult<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// Any value, as a generic tree (bounded by depth and item limits).
    pub fn value(&mut self) -> JResult<Spanned<'a>> {
        let start = match self.peek() {
            Some(_) => self.i,
            None => return self.err("expected a value but the input ended"),
        };
        let v = match self.b.get(self.i).copied().unwrap_or(0) {
            b'{' => {
                self.open(b'{')?;
                let mut members = Vec::new();
                if !self.empty_close(b'}') {
                    loop {
                        let k = self.key()?;
                        let v = self.value()?;
                        members.push((k, v));
                        if members.len() > MAX_JSON_CONTAINER_ITEMS {
                            return self.err(format!(
                                "object with more than {MAX_JSON_CONTAINER_ITEMS} members"
                            ));
                        }
                        if !self.next_sep(b'}')? {
                            break;
                        }
                    }
                }
                Json::Obj(members)
            }
            b'[' => {
                self.open(b'[')?;
                let mut items = Vec::new();
                if !self.empty_close(b']') {
                    loop {
                        items.push(self.value()?);
                        if items.len() > MAX_JSON_CONTAINER_ITEMS {
                            return self.err(format!(
                                "array with more than {MAX_JSON_CONTAINER_ITEMS} elements"
                            ));
                        }
                        if !self.next_sep(b']')? {
                            break;
                        }
                    }
                }
                Json::Arr(items)
            }
            b'"' => Json::Str(self.string()?),
            b't' => {
                self.literal("true")?;
                Json::Bool(true)
            }
            b'f' => {
                self.literal("false")?;
                Json::Bool(false)
            }
            b'n' => {
                self.literal("null")?;
                Json::Null
            }
            _ => Json::Num(self.number()?),
        };
        Ok(Spanned {
            v,
            start,
            end: self.i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> JResult<Json<'_>> {
        let mut c = Cursor::new(s);
        let v = c.value()?;
        if !c.at_end() {
            return c.err("trailing");
        }
        Ok(v.v)
    }

    #[test]
    fn basics() {
        assert_eq!(parse(" 12.5e3 ").unwrap(), Json::Num("12.5e3"));
        assert_eq!(
            parse("\"a\\u00e9\\ud83d\\ude00\\n\"").unwrap(),
            Json::Str("aé😀\n".into())
        );
        assert!(
            matches!(parse("{\"a\":[1,true,null,{}],\"b\":[]}").unwrap(), Json::Obj(m) if m.len() == 2)
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "tru",
            "nul",
            "\"a\u{1}\"",
            "[1 2]",
            "{1:2}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_JSON_DEPTH + 1) + &"]".repeat(MAX_JSON_DEPTH + 1);
        assert!(parse(&deep).is_err());
        let ok = "[".repeat(MAX_JSON_DEPTH) + &"]".repeat(MAX_JSON_DEPTH);
        assert!(parse(&ok).is_ok());
    }
}
