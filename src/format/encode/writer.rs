//! MessagePack or JSON behind one interface, so that both formats share one layout: the
//! encoder says what to write, never which format it writes.
//!
//! MessagePack goes through `crate::msgpack`; JSON is written here, with journalctl's form
//! for a value that is not UTF-8 (an array of byte values). It must never write a document
//! a JSON parser refuses: a field name that is not UTF-8 is written lossily.

use crate::msgpack;

/// The two map-shaped formats (OTLP has its own writer, `super::otlp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    MessagePack,
    Json,
}

/// Writes either MessagePack or JSON with one interface, so both formats share the layout.
pub(super) struct Writer<'a> {
    format: Kind,
    out: &'a mut Vec<u8>,
    /// JSON only: whether the next map entry or array element needs a comma.
    first: Vec<bool>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(format: Kind, out: &'a mut Vec<u8>) -> Self {
        Writer {
            format,
            out,
            first: Vec::new(),
        }
    }

    fn sep(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(b',');
            }
            *first = false;
        }
    }

    pub(super) fn begin_map(&mut self, n: usize) {
        match self.format {
            Kind::MessagePack => {
                msgpack::map_len(self.out, n);
            }
            Kind::Json => {
                self.sep();
                self.out.push(b'{');
                self.first.push(true);
            }
        }
    }

    pub(super) fn end_map(&mut self) {
        if self.format == Kind::Json {
            self.out.push(b'}');
            self.first.pop();
            self.end_value();
        }
    }

    pub(super) fn begin_array(&mut self, n: usize) {
        match self.format {
            Kind::MessagePack => {
                msgpack::array_len(self.out, n);
            }
            Kind::Json => {
                self.sep();
                self.out.push(b'[');
                self.first.push(true);
            }
        }
    }

    pub(super) fn end_array(&mut self) {
        if self.format == Kind::Json {
            self.out.push(b']');
            self.first.pop();
            self.end_value();
        }
    }

    pub(super) fn key(&mut self, name: &[u8]) {
        match self.format {
            Kind::MessagePack => self.value(name),
            Kind::Json => {
                self.sep();
                // Field names are ASCII in every valid journal; a name that is not UTF-8
                // is written lossily rather than breaking the JSON document.
                json_string(self.out, &String::from_utf8_lossy(name));
                self.out.push(b':');
                // The value follows the colon without a comma.
                if let Some(first) = self.first.last_mut() {
                    *first = true;
                }
            }
        }
    }

    pub(super) fn uint(&mut self, v: u64) {
        match self.format {
            Kind::MessagePack => {
                msgpack::uint(self.out, v);
            }
            Kind::Json => {
                self.sep();
                self.out.extend_from_slice(v.to_string().as_bytes());
                self.end_value();
            }
        }
    }

    /// Map entries already written as MessagePack (an entry's fields, `Entry::encoded`).
    pub(super) fn encoded(&mut self, pairs: &[u8]) {
        debug_assert!(self.format == Kind::MessagePack);
        self.out.extend_from_slice(pairs);
    }

    /// A value known to be UTF-8 (cursors, ids).
    pub(super) fn str_value(&mut self, v: &[u8]) {
        self.value(v)
    }

    /// str when valid UTF-8, bin otherwise (JSON: an array of byte values, as journalctl).
    pub(super) fn value(&mut self, v: &[u8]) {
        match self.format {
            Kind::MessagePack => msgpack::text_or_bin(self.out, v),
            Kind::Json => {
                self.sep();
                match std::str::from_utf8(v) {
                    Ok(s) => json_string(self.out, s),
                    Err(_) => {
                        self.out.push(b'[');
                        for (i, b) in v.iter().enumerate() {
                            if i > 0 {
                                self.out.push(b',');
                            }
                            self.out.extend_from_slice(b.to_string().as_bytes());
                        }
                        self.out.push(b']');
                    }
                }
                self.end_value();
            }
        }
    }

    /// After a map value, the next key needs a comma again.
    fn end_value(&mut self) {
        if let Some(first) = self.first.last_mut() {
            *first = false;
        }
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use crate::format::encode::tests::{CURSOR, encoder, entry};

    #[test]
    fn json_layout_and_escaping() {
        let mut enc = encoder("[encoding]\nformat = \"json\"\n");
        let e = entry(&[
            (b"MESSAGE", b"quote \" backslash \\ tab \t nl \n bell \x07"),
            (b"BLOB", &[0, 255]),
            (b"TAG", b"a"),
            (b"TAG", b"b"),
            (b"UNI", "héllo".as_bytes()),
        ]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["MESSAGE"], "quote \" backslash \\ tab \t nl \n bell \x07");
        assert_eq!(v["BLOB"], serde_json::json!([0, 255]));
        assert_eq!(v["TAG"], serde_json::json!(["a", "b"]));
        assert_eq!(v["UNI"], "héllo");
        assert_eq!(v["__REALTIME_TIMESTAMP"], 1_700_000_000_000_001u64);
        assert_eq!(v["__CURSOR"], CURSOR);
    }
}
