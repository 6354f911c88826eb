//! S3-style XML error bodies, for errors the node itself produces.

/// Escapes the five XML special characters.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `<Error><Code>..</Code><Message>..</Message><Resource>..</Resource><RequestId>..</RequestId></Error>`
pub fn error_body(code: &str, message: &str, resource: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        escape(code),
        escape(message),
        escape(resource),
        escape(request_id)
    )
}

/// Reverses [`escape`] (the five entities S3 uses).
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let a = s.find(open)? + open.len();
    let b = s[a..].find(close)? + a;
    Some(&s[a..b])
}

/// One page of a ListObjectsV2 answer: the keys, and the continuation token
/// when the listing is truncated.
pub fn parse_list_v2(xml: &str) -> (Vec<String>, Option<String>) {
    let keys = xml
        .split("<Contents>")
        .skip(1)
        .filter_map(|part| between(part, "<Key>", "</Key>"))
        .map(unescape)
        .collect();
    let truncated = between(xml, "<IsTruncated>", "</IsTruncated>") == Some("true");
    let next = truncated
        .then(|| between(xml, "<NextContinuationToken>", "</NextContinuationToken>"))
        .flatten()
        .map(unescape);
    (keys, next)
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_pages_parse() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key><Size>1</Size></Contents><Contents><Key>c</Key></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        assert_eq!(
            super::parse_list_v2(xml),
            (
                vec!["a&b".to_owned(), "c".to_owned()],
                Some("t1".to_owned())
            )
        );
        assert_eq!(
            super::parse_list_v2("<IsTruncated>false</IsTruncated>"),
            (vec![], None)
        );
    }

    #[test]
    fn escapes_user_bytes() {
        let body = super::error_body("NoSuchKey", "m", "/b/<k>&'\"", "1");
        assert!(body.contains("<Resource>/b/&lt;k&gt;&amp;&apos;&quot;</Resource>"));
    }
}
