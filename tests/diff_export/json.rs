//! Just enough of a JSON reader for `cowfs diff --json`, independent of cowfs's writer.

/// A JSON value, strings unescaped.
#[derive(Debug)]
pub enum Json {
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
    Text(String),
    /// A number, `true`, `false` or `null` (diff prints none).
    Other,
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        let value = Json::value(&chars, &mut at);
        Json::space(&chars, &mut at);
        assert_eq!(at, chars.len(), "trailing input after JSON value");
        value
    }

    fn space(c: &[char], at: &mut usize) {
        while *at < c.len() && c[*at].is_whitespace() {
            *at += 1;
        }
    }

    fn expect(c: &[char], at: &mut usize, want: char) {
        Json::space(c, at);
        assert_eq!(c.get(*at), Some(&want), "JSON: expected {want:?} at {at}");
        *at += 1;
    }

    fn value(c: &[char], at: &mut usize) -> Json {
        Json::space(c, at);
        match c.get(*at) {
            Some('[') => {
                *at += 1;
                let mut items = Vec::new();
                Json::space(c, at);
                if c.get(*at) == Some(&']') {
                    *at += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(Json::value(c, at));
                    Json::space(c, at);
                    *at += 1;
                    match c.get(*at - 1) {
                        Some(',') => continue,
                        Some(']') => return Json::Array(items),
                        other => panic!("JSON: {other:?} in an array"),
                    }
                }
            }
            Some('{') => {
                *at += 1;
                let mut fields = Vec::new();
                loop {
                    let Json::Text(key) = Json::value(c, at) else {
                        panic!("JSON: a key that is not a string")
                    };
                    Json::expect(c, at, ':');
                    fields.push((key, Json::value(c, at)));
                    Json::space(c, at);
                    *at += 1;
                    match c.get(*at - 1) {
                        Some(',') => continue,
                        Some('}') => return Json::Object(fields),
                        other => panic!("JSON: {other:?} in an object"),
                    }
                }
            }
            Some('"') => {
                *at += 1;
                let mut out = String::new();
                loop {
                    let ch = c[*at];
                    *at += 1;
                    match ch {
                        '"' => return Json::Text(out),
                        '\\' => {
                            let esc = c[*at];
                            *at += 1;
                            out.push(match esc {
                                'n' => '\n',
                                'u' => {
                                    let hex: String = c[*at..*at + 4].iter().collect();
                                    *at += 4;
                                    char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
                                }
                                other => other,
                            });
                        }
                        ch if (ch as u32) < 0x20 => panic!("JSON: a raw control char in a string"),
                        ch => out.push(ch),
                    }
                }
            }
            _ => {
                let start = *at;
                while *at < c.len() && !",]} \n".contains(c[*at]) {
                    *at += 1;
                }
                assert!(*at > start, "JSON: no value at {start}");
                Json::Other
            }
        }
    }

    pub fn field(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Json::Text(t) => Some(t),
            _ => None,
        }
    }
}
