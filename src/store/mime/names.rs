//! Names and bytes of parts: section numbers, filenames (RFC 2231/2047 decoded and
//! sanitised), extensions from MIME types, transfer decoding and charsets.

use super::*;

pub(super) fn section(prefix: &str, n: usize) -> String {
    if prefix.is_empty() {
        n.to_string()
    } else {
        format!("{prefix}.{n}")
    }
}

/// Whether a Content-Transfer-Encoding leaves the bytes as they are.
pub(super) fn identity(encoding: &str) -> bool {
    matches!(encoding, "7bit" | "8bit" | "binary" | "")
}

/// Undo a Content-Transfer-Encoding; undecodable input is kept as it is (logged).
pub(super) fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let decoded = match encoding {
        "base64" => mail_parser::decoders::base64::base64_decode(data),
        "quoted-printable" => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(data)
        }
        _ => return data.to_vec(),
    };
    decoded.unwrap_or_else(|| {
        log::warn!("a {encoding} part does not decode: shown as it is");
        data.to_vec()
    })
}

/// Text in `charset` as UTF-8 (mail-parser's decoders; unknown charsets read as UTF-8 with
/// replacement characters).
pub(super) fn to_utf8(raw: Vec<u8>, charset: Option<&str>) -> String {
    if !is_utf8_charset(charset) {
        if let Some(decoder) = charset
            .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
        {
            return decoder(&raw);
        }
    }
    // Valid UTF-8 (the usual case) is taken as it is, without a copy.
    String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether a part of this charset is UTF-8 as it stands (none named, UTF-8 or US-ASCII).
pub(super) fn is_utf8_charset(charset: Option<&str>) -> bool {
    charset.is_none_or(|c| {
        c.eq_ignore_ascii_case("utf-8")
            || c.eq_ignore_ascii_case("utf8")
            || c.eq_ignore_ascii_case("us-ascii")
    })
}

/// A parameter (`filename`, `name`) decoded the way mail-parser decodes a header: RFC 2231
/// (`filename*`, continuations `filename*0*`, charsets) and RFC 2047 words. The parameters
/// are written back into a header line for it, every value quoted.
pub(super) fn decoded_param(params: &[(String, String)], key: &str) -> Option<String> {
    use mail_parser::MimeHeaders;
    let wanted = params.iter().any(|(k, _)| {
        let k = k.to_ascii_lowercase();
        k == key
            || k.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('*'))
    });
    if !wanted {
        return None;
    }
    let mut line = String::from("Content-Disposition: x");
    for (k, v) in params {
        let k: String = k
            .chars()
            .filter(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(*c) || *c == '*')
            .collect();
        if k.is_empty() {
            continue;
        }
        let v: String = v
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        line.push_str(&format!(";\r\n {k}=\"{v}\""));
    }
    line.push_str("\r\n\r\n");
    let parsed = mail_parser::MessageParser::default().parse_headers(line.as_bytes())?;
    let value = parsed.content_disposition()?.attribute(key)?.to_string();
    Some(value)
}

/// A decoded filename as a safe name: control characters (NUL among them) removed, `/`
/// replaced by `_`, surrounding white space and leading dots removed, cut at
/// [`MAX_NAME_BYTES`] keeping an extension of up to 16 bytes. `None` if nothing is left.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let s: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    let s = s.trim().trim_start_matches('.').trim();
    if s.is_empty() {
        return None;
    }
    if s.len() <= MAX_NAME_BYTES {
        return Some(s.to_string());
    }
    let ext = s
        .rfind('.')
        .map(|i| &s[i..])
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let mut stem_end = MAX_NAME_BYTES - ext.len();
    while !s.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    Some(format!("{}{ext}", &s[..stem_end]))
}

/// A file name extension for a MIME type without a filename.
pub fn extension(mime_type: &str) -> &'static str {
    match mime_type {
        "text/plain" => "txt",
        "text/html" => "html",
        "text/calendar" => "ics",
        "text/csv" => "csv",
        "text/vcard" | "text/x-vcard" => "vcf",
        "text/xml" | "application/xml" => "xml",
        "text/markdown" => "md",
        "text/rfc822-headers" => "txt",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "image/tiff" => "tif",
        "image/bmp" => "bmp",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "audio/wav" | "audio/x-wav" => "wav",
        "video/mp4" => "mp4",
        "video/mpeg" => "mpg",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/gzip" | "application/x-gzip" => "gz",
        "application/json" => "json",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/pgp-signature" => "asc",
        "application/pgp-encrypted" | "application/pgp-keys" => "asc",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => "p7m",
        "application/ics" => "ics",
        "message/rfc822" | "message/global" => "eml",
        "message/delivery-status" | "message/disposition-notification" => "txt",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn filenames_decode_rfc2231_and_rfc2047() {
        assert_eq!(
            decoded_param(
                &[p("filename*", "UTF-8''%E2%82%AC%20rates.pdf")],
                "filename"
            ),
            Some("\u{20ac} rates.pdf".into())
        );
        assert_eq!(
            decoded_param(
                &[
                    p("filename*0*", "UTF-8''%E2%82%AC%20r"),
                    p("filename*1", "ates.pdf")
                ],
                "filename"
            ),
            Some("\u{20ac} rates.pdf".into())
        );
        assert_eq!(
            decoded_param(&[p("name", "=?UTF-8?B?w6TDtsO8LnBkZg==?=")], "name"),
            Some("\u{e4}\u{f6}\u{fc}.pdf".into())
        );
        assert_eq!(
            decoded_param(&[p("filename*", "iso-8859-1'en'%E4%F6.txt")], "filename"),
            Some("\u{e4}\u{f6}.txt".into())
        );
        assert_eq!(
            decoded_param(&[p("FILENAME", "a\"b\\c/d.pdf")], "filename"),
            Some("a\"b\\c/d.pdf".into())
        );
        assert_eq!(decoded_param(&[p("size", "3")], "filename"), None);
    }

    #[test]
    fn filenames_are_sanitised() {
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some("_.._etc_passwd")
        );
        assert_eq!(sanitize_filename("a/b.pdf").as_deref(), Some("a_b.pdf"));
        assert_eq!(sanitize_filename(".hidden").as_deref(), Some("hidden"));
        assert_eq!(sanitize_filename("a\0b\r\n.txt").as_deref(), Some("ab.txt"));
        assert_eq!(sanitize_filename(" ... "), None);
        let long = format!("{}.pdf", "\u{e9}".repeat(300));
        let s = sanitize_filename(&long).unwrap();
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with(".pdf"), "{s}");
    }

    #[test]
    fn local_decoding() {
        assert_eq!(decode("base64", b"SGVs\r\nbG8=\r\n"), b"Hello");
        assert_eq!(
            decode("quoted-printable", b"Gr=FC=\r\n=DFe\r\n"),
            b"Gr\xfc\xdfe\r\n"
        );
        assert_eq!(decode("7bit", b"as is"), b"as is");
        assert_eq!(
            to_utf8(b"Gr\xfc\xdfe".to_vec(), Some("iso-8859-1")),
            "Gr\u{fc}\u{df}e"
        );
    }
}
