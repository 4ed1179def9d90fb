/*!
Escaping for HTML fields (an email's `html`), after Go's `html/template`,
which Alertmanager runs those fields with.

The executor feeds the template's literal text to a [`Context`] as it writes
it, and asks it to escape each value an action prints. The context is a small
HTML tokenizer that knows whether the output is in text, inside a tag, in an
attribute value (quoted or not, and whether the attribute holds a URL), in a
comment or in the content of `<script>`, `<style>`, `<textarea>` or `<title>`.
Like Go, it reads only the template's text: what actions print never changes
it. It follows the text actually written, so branches of `if` and `range`
that end in different contexts work here where Go rejects the template.

What an action prints, by context:
- text: HTML-escaped (`<`, `>`, `&`, `'`, `"` and `+`), except `safeHtml`'s
  values, which are written as they are; a missing value prints as nothing
  (`<no value>` in text fields);
- `<textarea>` and `<title>` content: escaped, `safeHtml`'s values too (their
  entities are kept);
- quoted attribute values: escaped; `safeHtml`'s values lose their tags first;
- unquoted attribute values: also spaces, `=` and `` ` `` are escaped;
- URL attribute values (`href`, `src`, `action`, names containing `url`,
  `uri` or `src`...): a value that starts the URL with a scheme other than
  `http`, `https` or `mailto` becomes `#ZgotmplZ` unless it comes from
  `safeUrl`; then bytes that cannot appear in a URL are percent-encoded (in the
  query or fragment, every reserved character is), and the result is escaped
  for the attribute;
- `srcset` values: each comma-separated candidate whose URL is unsafe, or
  whose size is more than letters and digits, becomes `#ZgotmplZ`.

Not covered (Go does more): actions in `<script>` and `<style>` content and in
`on*` and `style` attributes are HTML-escaped, where Go escapes them as
JavaScript or CSS; actions that print an attribute name are escaped rather
than filtered; comments in the template are kept, where Go removes them.
*/

use super::gofmt;
use super::value::Value;

/// Where the output is, after the literal text written so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Context {
    state: State,
    /// The special element whose start tag is being read, if any: its
    /// content follows the tag's `>`.
    element: Option<Special>,
    /// What the attribute being read holds.
    attr: Attr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// Inside `<!-- ... -->`.
    Comment,
    /// The content of a special element, up to its end tag.
    Content(Special),
    /// Inside a tag, between attributes.
    Tag,
    /// Reading an attribute name.
    AttrName,
    /// After an attribute name, before `=` (or the next attribute).
    AfterName,
    /// After `=`, before the value.
    BeforeValue,
    /// In an attribute value.
    Value {
        quote: Quote,
        kind: ValueKind,
    },
}

/// What an attribute holds, as Go's `attrType` decides from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    Plain,
    Url,
    /// `srcset`: URLs, each with a size, separated by commas.
    Srcset,
}

/// What the attribute value being read holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Plain,
    /// A URL, and where in it the output is.
    Url(UrlPart),
    Srcset,
}

/// How an attribute value ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Double,
    Single,
    /// At white space or `>`.
    None,
}

/// Where in a URL attribute value the output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlPart {
    /// Nothing but white space yet: a value here chooses the scheme.
    Start,
    /// After the start, before any `?` or `#`.
    BeforeQuery,
    /// After a `?` or `#`.
    QueryOrFragment,
}

/// Elements whose content is not HTML markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    Script,
    Style,
    Textarea,
    Title,
}

impl Special {
    fn from_name(name: &[u8]) -> Option<Special> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("script") {
            Some(Special::Script)
        } else if is("style") {
            Some(Special::Style)
        } else if is("textarea") {
            Some(Special::Textarea)
        } else if is("title") {
            Some(Special::Title)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Special::Script => "script",
            Special::Style => "style",
            Special::Textarea => "textarea",
            Special::Title => "title",
        }
    }
}

/// What a printed value is, for escaping: Go's content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Plain,
    /// `template.HTML` (`safeHtml`).
    Html,
    /// `template.URL` (`safeUrl`).
    Url,
}

/// What `html/template` writes for a value it refuses.
const FAILSAFE: &str = "ZgotmplZ";

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r')
}

/// The index of the first byte at or after `from` that is not white space.
fn skip_space(s: &[u8], from: usize) -> usize {
    s[from..]
        .iter()
        .position(|b| !is_space(*b))
        .map_or(s.len(), |n| from + n)
}

/// The end of an attribute name starting at `from`.
fn attr_name_end(s: &[u8], from: usize) -> usize {
    s[from..]
        .iter()
        .position(|b| is_space(*b) || *b == b'=' || *b == b'>')
        .map_or(s.len(), |n| from + n)
}

/// The end of a tag name starting at `from` (a letter, then letters, digits
/// and single `-` or `:` between them); `from` when there is none.
fn tag_name_end(s: &[u8], from: usize) -> usize {
    if !s.get(from).is_some_and(u8::is_ascii_alphabetic) {
        return from;
    }
    let mut j = from + 1;
    while j < s.len() {
        if s[j].is_ascii_alphanumeric() {
            j += 1;
        } else if matches!(s[j], b'-' | b':') && s.get(j + 1).is_some_and(u8::is_ascii_alphanumeric)
        {
            j += 2;
        } else {
            break;
        }
    }
    j
}

/// What an attribute of this (lower-case) name holds, as Go's `attrType`
/// decides.
fn attr_kind(name: &str) -> Attr {
    let name = match name.strip_prefix("data-") {
        Some(rest) => rest,
        None => match name.split_once(':') {
            Some(("xmlns", _)) => return Attr::Url,
            Some((_, local)) => local,
            None => name,
        },
    };
    const URL_ATTRS: [&str; 17] = [
        "action",
        "archive",
        "background",
        "cite",
        "classid",
        "codebase",
        "data",
        "formaction",
        "href",
        "icon",
        "longdesc",
        "manifest",
        "poster",
        "profile",
        "src",
        "usemap",
        "xmlns",
    ];
    if URL_ATTRS.contains(&name) {
        return Attr::Url;
    }
    if name == "srcset" {
        return Attr::Srcset;
    }
    // Go's other known attributes are not URLs, whatever their names contain.
    if name == "srcdoc" || name == "srclang" || name.starts_with("on") {
        return Attr::Plain;
    }
    if name.contains("src") || name.contains("uri") || name.contains("url") {
        Attr::Url
    } else {
        Attr::Plain
    }
}

impl Context {
    /// The context at the start of an HTML field.
    pub(super) const TEXT: Context = Context {
        state: State::Text,
        element: None,
        attr: Attr::Plain,
    };

    /// Moves past literal template text.
    pub(super) fn feed(&mut self, text: &str) {
        let s = text.as_bytes();
        let mut i = 0;
        while i < s.len() {
            i = self.step(s, i);
        }
    }

    /// One transition over `s[i..]`: returns where the next one starts.
    fn step(&mut self, s: &[u8], i: usize) -> usize {
        match self.state {
            State::Text => self.step_text(s, i),
            State::Comment => match find(s, i, b"-->") {
                Some(j) => {
                    self.state = State::Text;
                    j + 3
                }
                None => s.len(),
            },
            State::Content(el) => match find_end_tag(s, i, el.name()) {
                Some(j) => {
                    self.state = State::Text;
                    j
                }
                None => s.len(),
            },
            State::Tag => {
                let j = skip_space(s, i);
                if j == s.len() {
                    return j;
                }
                if s[j] == b'>' {
                    self.state = match self.element.take() {
                        Some(el) => State::Content(el),
                        None => State::Text,
                    };
                    return j + 1;
                }
                if s[j] == b'=' {
                    // A value without a name: Go rejects it; skip the `=`.
                    return j + 1;
                }
                let end = attr_name_end(s, j);
                let name = String::from_utf8_lossy(&s[j..end]).to_ascii_lowercase();
                self.attr = attr_kind(&name);
                self.state = if end == s.len() {
                    State::AttrName
                } else {
                    State::AfterName
                };
                end
            }
            State::AttrName => {
                let end = attr_name_end(s, i);
                if end < s.len() {
                    self.state = State::AfterName;
                }
                end
            }
            State::AfterName => {
                let j = skip_space(s, i);
                if j == s.len() {
                    return j;
                }
                if s[j] == b'=' {
                    self.state = State::BeforeValue;
                    j + 1
                } else {
                    self.state = State::Tag;
                    j
                }
            }
            State::BeforeValue => {
                let j = skip_space(s, i);
                if j == s.len() {
                    return j;
                }
                let (quote, next) = match s[j] {
                    b'"' => (Quote::Double, j + 1),
                    b'\'' => (Quote::Single, j + 1),
                    _ => (Quote::None, j),
                };
                self.start_value(quote);
                next
            }
            State::Value { quote, kind } => {
                let end = match quote {
                    Quote::Double => s[i..].iter().position(|b| *b == b'"'),
                    Quote::Single => s[i..].iter().position(|b| *b == b'\''),
                    Quote::None => s[i..].iter().position(|b| is_space(*b) || *b == b'>'),
                }
                .map(|n| i + n);
                let value = &s[i..end.unwrap_or(s.len())];
                let kind = match kind {
                    ValueKind::Url(_) if value.iter().any(|b| matches!(b, b'?' | b'#')) => {
                        ValueKind::Url(UrlPart::QueryOrFragment)
                    }
                    ValueKind::Url(UrlPart::Start) if value.iter().any(|b| !is_space(*b)) => {
                        ValueKind::Url(UrlPart::BeforeQuery)
                    }
                    other => other,
                };
                match end {
                    Some(j) => {
                        self.state = State::Tag;
                        // A closing quote is part of the value; white space
                        // or `>` is read by the tag.
                        if quote == Quote::None { j } else { j + 1 }
                    }
                    None => {
                        self.state = State::Value { quote, kind };
                        s.len()
                    }
                }
            }
        }
    }

    /// Text up to the next tag or comment.
    fn step_text(&mut self, s: &[u8], i: usize) -> usize {
        let mut k = i;
        while let Some(n) = s[k..].iter().position(|b| *b == b'<') {
            let lt = k + n;
            if s[lt..].starts_with(b"<!--") {
                self.state = State::Comment;
                return lt + 4;
            }
            let end_tag = s.get(lt + 1) == Some(&b'/');
            let name_start = lt + 1 + usize::from(end_tag);
            let name_end = tag_name_end(s, name_start);
            if name_end > name_start {
                self.state = State::Tag;
                self.element = if end_tag {
                    None
                } else {
                    Special::from_name(&s[name_start..name_end])
                };
                return name_end;
            }
            k = lt + 1;
        }
        s.len()
    }

    fn start_value(&mut self, quote: Quote) {
        self.state = State::Value {
            quote,
            kind: match self.attr {
                Attr::Plain => ValueKind::Plain,
                Attr::Url => ValueKind::Url(UrlPart::Start),
                Attr::Srcset => ValueKind::Srcset,
            },
        };
    }

    /// The text an action prints for `v` here.
    pub(super) fn escape(&mut self, v: &Value) -> String {
        let (text, content) = match v {
            Value::Str(s) => (s.to_string(), Content::Plain),
            Value::Html(s) => (s.to_string(), Content::Html),
            Value::Url(s) => (s.to_string(), Content::Url),
            // Go's html/template prints a missing value as nothing, where
            // text/template prints `<no value>`.
            Value::Nil => (String::new(), Content::Plain),
            other => (gofmt::sprint_value(other), Content::Plain),
        };
        // An action right after `=` is an unquoted value, as in Go.
        if self.state == State::BeforeValue {
            self.start_value(Quote::None);
        }
        match self.state {
            State::Text | State::Comment | State::Content(Special::Script | Special::Style) => {
                match content {
                    Content::Html => text,
                    _ => escape_with(&text, Table::Text, true),
                }
            }
            State::Content(Special::Textarea | Special::Title) => {
                escape_with(&text, Table::Text, content != Content::Html)
            }
            State::Tag | State::AttrName | State::AfterName | State::BeforeValue => {
                escape_with(&text, Table::Text, true)
            }
            State::Value { quote, kind } => {
                let table = match quote {
                    Quote::None => Table::Unquoted,
                    _ => Table::Text,
                };
                match kind {
                    ValueKind::Plain if content == Content::Html => {
                        escape_with(&strip_tags(&text), table, false)
                    }
                    ValueKind::Plain => escape_with(&text, table, true),
                    ValueKind::Srcset => escape_with(&filter_srcset(&text, content), table, true),
                    ValueKind::Url(part) => {
                        let url = match part {
                            UrlPart::Start if content != Content::Url && !is_safe_url(&text) => {
                                format!("#{FAILSAFE}")
                            }
                            UrlPart::Start | UrlPart::BeforeQuery => percent_encode(&text, true),
                            UrlPart::QueryOrFragment => percent_encode(&text, false),
                        };
                        escape_with(&url, table, true)
                    }
                }
            }
        }
    }
}

/// The first index at or after `from` where `needle` starts.
fn find(s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    s[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| from + n)
}

/// Where the end tag `</name` of a special element starts (the name in any
/// case, followed by white space, `/`, `>` or the end of the text).
fn find_end_tag(s: &[u8], from: usize, name: &str) -> Option<usize> {
    let mut k = from;
    while let Some(lt) = find(s, k, b"</") {
        let after = lt + 2 + name.len();
        let matches = s
            .get(lt + 2..after)
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            && s.get(after)
                .is_none_or(|b| is_space(*b) || matches!(b, b'/' | b'>'));
        if matches {
            return Some(lt);
        }
        k = lt + 2;
    }
    None
}

/// Go's `isSafeURL`: a URL without a scheme (nothing before a `:`, or a `/`
/// before it), or with `http`, `https` or `mailto` in any case.
fn is_safe_url(url: &str) -> bool {
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.contains('/') => ["http", "https", "mailto"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s)),
        _ => true,
    }
}

/// Go's `srcset` filter: each comma-separated candidate keeps its URL
/// (normalized) and size only when the URL is safe and the size is letters,
/// digits and white space; otherwise it becomes `#ZgotmplZ`. A `safeUrl`
/// value is one URL, normalized, with its commas encoded.
fn filter_srcset(s: &str, content: Content) -> String {
    if content == Content::Url {
        return percent_encode(s, true).replace(',', "%2c");
    }
    let mut out = String::with_capacity(s.len());
    for (i, candidate) in s.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        let b = candidate.as_bytes();
        let start = skip_space(b, 0);
        let end = b[start..]
            .iter()
            .position(|c| is_space(*c))
            .map_or(b.len(), |n| start + n);
        let url = &candidate[start..end];
        let size_ok = b[end..]
            .iter()
            .all(|c| is_space(*c) || c.is_ascii_alphanumeric());
        if is_safe_url(url) && size_ok {
            out.push_str(&candidate[..start]);
            out.push_str(&percent_encode(url, true));
            out.push_str(&candidate[end..]);
        } else {
            out.push('#');
            out.push_str(FAILSAFE);
        }
    }
    out
}

/// Go's URL normalizer (`normalize`) and escaper: percent-encodes (with
/// lower-case hex, like Go) every byte but letters, digits and `-._~`;
/// normalizing also keeps the reserved characters and escapes that are
/// already there (`%` and two hex digits).
fn percent_encode(s: &str, normalize: bool) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let keep = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => true,
            b'!' | b'#' | b'$' | b'&' | b'*' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?'
            | b'@' | b'[' | b']' => normalize,
            b'%' => {
                normalize
                    && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            }
            _ => false,
        };
        if keep {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02x}"));
        }
    }
    out
}

/// Go's replacement tables for HTML escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// Text, RCDATA and quoted attribute values.
    Text,
    /// Unquoted attribute values: white space, `=` and `` ` `` too.
    Unquoted,
}

/// Escapes `s` with `table`; `&` only with `amp` (off for `safeHtml`'s
/// values, whose entities are kept).
fn escape_with(s: &str, table: Table, amp: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let unquoted = table == Table::Unquoted;
        match c {
            '&' if amp => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '+' => out.push_str("&#43;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' if unquoted => out.push_str("&#xfffd;"),
            '\0' => out.push('\u{FFFD}'),
            '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '=' | '`' if unquoted => {
                out.push_str(&format!("&#{};", c as u32));
            }
            // Non-characters, which some browsers refuse in unquoted values.
            '\u{FDD0}'..='\u{FDEF}' | '\u{FFF0}'..='\u{FFFF}' if unquoted => {
                out.push_str(&format!("&#x{:x};", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The text of an HTML fragment without its tags and comments (Go's
/// `stripTags`), for a `safeHtml` value printed in an attribute.
fn strip_tags(html: &str) -> String {
    let s = html.as_bytes();
    let mut ctx = Context::TEXT;
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let before = ctx.state;
        let next = ctx.step(s, i);
        // Go keeps the content of textarea and title, not of scripts and
        // styles.
        if matches!(
            before,
            State::Text | State::Content(Special::Textarea | Special::Title)
        ) {
            // Text up to the tag or comment that starts here (an end tag
            // after special content starts at `next`).
            let end = if ctx.state == before || before != State::Text {
                next
            } else {
                s[i..next]
                    .iter()
                    .rposition(|b| *b == b'<')
                    .map_or(next, |n| i + n)
            };
            out.extend_from_slice(&s[i..end]);
        }
        i = next;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context after `text`.
    fn after(text: &str) -> Context {
        let mut c = Context::TEXT;
        c.feed(text);
        c
    }

    fn value(quote: Quote, url: Option<UrlPart>) -> State {
        let kind = match url {
            Some(part) => ValueKind::Url(part),
            None => ValueKind::Plain,
        };
        State::Value { quote, kind }
    }

    #[test]
    fn the_tokenizer_finds_the_context() {
        for (text, want) in [
            ("", State::Text),
            ("a < b <3 <", State::Text),
            ("<a", State::Tag),
            ("<a ", State::Tag),
            ("<a hr", State::AttrName),
            ("<a href", State::AttrName),
            ("<a href ", State::AfterName),
            ("<a href =", State::BeforeValue),
            ("<a href=\"", value(Quote::Double, Some(UrlPart::Start))),
            ("<a href=' ", value(Quote::Single, Some(UrlPart::Start))),
            (
                "<a href=\"/x",
                value(Quote::Double, Some(UrlPart::BeforeQuery)),
            ),
            (
                "<a href=\"/x?",
                value(Quote::Double, Some(UrlPart::QueryOrFragment)),
            ),
            (
                "<a href=\"#",
                value(Quote::Double, Some(UrlPart::QueryOrFragment)),
            ),
            ("<a href=x", value(Quote::None, Some(UrlPart::BeforeQuery))),
            ("<a href=x ", State::Tag),
            ("<a title=\"x", value(Quote::Double, None)),
            ("<a title=\"x\" ", State::Tag),
            ("<a title=\"x>\"", State::Tag),
            ("<a title=\"x\">", State::Text),
            ("<a title=\"x\"></a>", State::Text),
            ("<br/>", State::Text),
            ("<!-- <a href=\"", State::Comment),
            ("<!-- x -->", State::Text),
            ("<script>", State::Content(Special::Script)),
            (
                "<script>if (a<b) '</scripts>'",
                State::Content(Special::Script),
            ),
            ("<script>x</SCRIPT >", State::Text),
            ("<TextArea rows=2><b>", State::Content(Special::Textarea)),
            ("<title>x</title>", State::Text),
            ("</title>", State::Text),
        ] {
            assert_eq!(after(text).state, want, "{text:?}");
        }
    }

    #[test]
    fn urls_are_percent_encoded_like_go() {
        assert_eq!(
            percent_encode("a b/%41%g?&é", true),
            "a%20b/%41%25g?&%c3%a9"
        );
        assert_eq!(
            percent_encode("a b/%41?&=é~", false),
            "a%20b%2f%2541%3f%26%3d%c3%a9~"
        );
        assert_eq!(percent_encode("%", true), "%25");
        assert_eq!(percent_encode("%4", true), "%254");
        assert_eq!(percent_encode("'()", true), "%27%28%29");
    }

    #[test]
    fn only_web_and_mail_schemes_are_safe() {
        for url in [
            "http://x",
            "HTTPS://x",
            "mailto:a@b",
            "/a:b",
            "a/b:c",
            "",
            "x",
            "#f",
            "?q=a/b:c",
        ] {
            assert!(is_safe_url(url), "{url}");
        }
        for url in [
            "javascript:x",
            "JavaScript:x",
            "data:x",
            "vbscript:x",
            " http://x",
            "tel:1",
            ":x",
            "?q=a:b",
        ] {
            assert!(!is_safe_url(url), "{url}");
        }
    }

    #[test]
    fn srcset_candidates_are_filtered_one_by_one() {
        let t = "a b.png 2x, javascript:x 1x,/c.png 100w, /d.png 1.5x";
        assert_eq!(
            filter_srcset(t, Content::Plain),
            "#ZgotmplZ,#ZgotmplZ,/c.png 100w,#ZgotmplZ"
        );
        assert_eq!(filter_srcset(" /x.png , ", Content::Plain), " /x.png , ");
        assert_eq!(filter_srcset("/a é.png", Content::Html), "#ZgotmplZ");
        assert_eq!(filter_srcset("/é.png 2x", Content::Plain), "/%c3%a9.png 2x");
        assert_eq!(filter_srcset("/a b,c", Content::Url), "/a%20b%2cc");
        let mut c = after("<img srcset=");
        assert_eq!(c.escape(&Value::Url("/a b,c".into())), "/a%20b%2cc");
    }

    #[test]
    fn tags_are_stripped_from_html_in_attributes() {
        for (html, want) in [
            ("plain & text", "plain & text"),
            ("<b>x</b> y", "x y"),
            ("a <!-- c --> b", "a  b"),
            ("I <3 you", "I <3 you"),
            ("<div title=\"1>2\">t</div>", "t"),
            ("<script>a<b</script>c", "c"),
            ("<title>a<b</title>c", "a<bc"),
            ("<a href=\"x", ""),
        ] {
            assert_eq!(strip_tags(html), want, "{html:?}");
        }
    }

    #[test]
    fn unquoted_values_escape_what_would_end_them() {
        let mut c = after("<a title=");
        assert_eq!(
            c.escape(&Value::str("a\tb\0\u{FDD0}")),
            "a&#9;b&#xfffd;&#xfdd0;"
        );
        assert_eq!(c.state, value(Quote::None, None));
        let mut c = after("<a title=\"");
        assert_eq!(
            c.escape(&Value::str("a\tb\0\u{FDD0}")),
            "a\tb\u{FFFD}\u{FDD0}"
        );
    }
}
