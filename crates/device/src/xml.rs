//! A tiny element tree over `quick-xml` that remembers where every element, attribute and text node
//! starts in the source, so validation errors can name `line:col`.
//!
//! Only what profiles need: elements, attributes and (to reject it) text. Comments, processing
//! instructions, the XML declaration and a DOCTYPE are skipped. Parsing never panics; the first
//! well-formedness error ends parsing (there is no reliable recovery inside broken markup).

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Profiles nest three levels deep; anything far deeper is not a profile, and refusing it keeps the
/// tree (and its recursive drop) small on hostile input.
const MAX_DEPTH: usize = 32;

/// One attribute with the byte offsets of its name and value.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    /// Attribute name as written.
    pub(crate) name: String,
    /// Unescaped value.
    pub(crate) value: String,
    /// Byte offset of the first character of the name.
    pub(crate) pos: usize,
    /// Byte offset of the first character of the value (after the quote).
    pub(crate) value_pos: usize,
}

/// One element with its attributes, children and any non-whitespace text it contained.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    /// Element name as written.
    pub(crate) name: String,
    /// Byte offset of the `<`.
    pub(crate) pos: usize,
    /// Attributes in source order.
    pub(crate) attrs: Vec<Attr>,
    /// Child elements in source order.
    pub(crate) children: Vec<Element>,
    /// Non-whitespace text directly inside this element: (byte offset, text).
    pub(crate) text: Vec<(usize, String)>,
}

impl Element {
    /// The attribute called `name`, if present.
    pub(crate) fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

/// A well-formedness error: byte offset and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XmlError {
    /// Byte offset the error refers to.
    pub(crate) pos: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// What the document held: the root element (if any) plus text or extra roots outside it, reported as
/// errors by the caller.
#[derive(Debug, Default)]
pub(crate) struct Document {
    /// The first root element.
    pub(crate) root: Option<Element>,
    /// Byte offsets of further root elements (a document has exactly one).
    pub(crate) extra_roots: Vec<(usize, String)>,
    /// Non-whitespace text outside the root element.
    pub(crate) stray_text: Vec<usize>,
}

/// Byte offset of `part` inside `base`, when `part` borrows from `base`.
fn offset_in(base: &str, part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= base.len()).then_some(start)
}

fn attr_error_offset(e: &AttrError) -> usize {
    match e {
        AttrError::ExpectedEq(p)
        | AttrError::ExpectedValue(p)
        | AttrError::UnquotedValue(p)
        | AttrError::ExpectedQuote(p, _)
        | AttrError::Duplicated(p, _) => *p,
    }
}

fn attr_error_message(e: &AttrError) -> String {
    match e {
        AttrError::ExpectedEq(_) => "attribute name not followed by `=`".into(),
        AttrError::ExpectedValue(_) => "attribute has no value".into(),
        AttrError::UnquotedValue(_) => "attribute value is not quoted".into(),
        AttrError::ExpectedQuote(_, q) => {
            format!("attribute value not closed by {:?}", char::from(*q))
        }
        AttrError::Duplicated(_, first) => {
            format!("duplicate attribute (first one at offset {first} in the tag)")
        }
    }
}

/// Builds an [`Element`] (without children) from a start or empty tag.
fn element(text: &str, e: &BytesStart<'_>, fallback: usize) -> Result<Element, XmlError> {
    let raw: &[u8] = e.as_ref();
    // `raw` is the tag content after `<`; it borrows from `text` because the reader reads a `&str`.
    let content = offset_in(text, raw).unwrap_or(fallback.saturating_add(1));
    let pos = content.saturating_sub(1);
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in e.attributes().with_checks(true) {
        let attr = attr.map_err(|err| XmlError {
            pos: content.saturating_add(attr_error_offset(&err)),
            message: format!("bad XML: {} in <{name}>", attr_error_message(&err)),
        })?;
        let key = attr.key.as_ref();
        let attr_pos = offset_in(text, key).unwrap_or(pos);
        let attr_name = String::from_utf8_lossy(key).into_owned();
        // The value starts after the first quote following the name.
        let value_pos = text
            .get(attr_pos..)
            .and_then(|rest| rest.find(['"', '\'']))
            .map_or(attr_pos, |q| attr_pos.saturating_add(q).saturating_add(1));
        let value = attr
            .unescape_value()
            .map_err(|err| XmlError {
                pos: value_pos,
                message: format!("bad XML: attribute \"{attr_name}\" on <{name}>: {err}"),
            })?
            .into_owned();
        attrs.push(Attr { name: attr_name, value, pos: attr_pos, value_pos });
    }
    Ok(Element { name, pos, attrs, children: Vec::new(), text: Vec::new() })
}

/// Parses `text` into a [`Document`]. The first well-formedness error is returned as `Err`.
pub(crate) fn parse(text: &str) -> Result<Document, XmlError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    reader.config_mut().expand_empty_elements = false;
    let mut doc = Document::default();
    let mut stack: Vec<Element> = Vec::new();

    let attach = |doc: &mut Document, stack: &mut Vec<Element>, el: Element| match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if doc.root.is_none() => doc.root = Some(el),
        None => doc.extra_roots.push((el.pos, el.name)),
    };

    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| XmlError {
            pos: usize::try_from(reader.error_position()).unwrap_or(before),
            message: format!("bad XML: {e}"),
        })?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError {
                        pos: before,
                        message: format!("elements nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                stack.push(element(text, &e, before)?);
            }
            Event::Empty(e) => {
                let el = element(text, &e, before)?;
                attach(&mut doc, &mut stack, el);
            }
            Event::End(_) => {
                // quick-xml checked that the name matches the open element.
                if let Some(el) = stack.pop() {
                    attach(&mut doc, &mut stack, el);
                }
            }
            Event::Text(t) => {
                let raw: &[u8] = t.as_ref();
                if let Some(first) = raw.iter().position(|b| !b.is_ascii_whitespace()) {
                    let pos = offset_in(text, raw).unwrap_or(before).saturating_add(first);
                    let content = t
                        .unescape()
                        .map_err(|e| XmlError { pos, message: format!("bad XML: {e}") })?
                        .trim()
                        .to_string();
                    match stack.last_mut() {
                        Some(parent) => parent.text.push((pos, content)),
                        None => doc.stray_text.push(pos),
                    }
                }
            }
            Event::CData(t) => {
                let raw: &[u8] = t.as_ref();
                if raw.iter().any(|b| !b.is_ascii_whitespace()) {
                    let pos = offset_in(text, raw).map_or(before, |p| p.saturating_sub(9));
                    let content = String::from_utf8_lossy(raw).trim().to_string();
                    match stack.last_mut() {
                        Some(parent) => parent.text.push((pos, content)),
                        None => doc.stray_text.push(pos),
                    }
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError {
            pos: text.len(),
            message: format!(
                "bad XML: unexpected end of file: <{}> is not closed (opened at offset {})",
                open.name, open.pos
            ),
        });
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_elements_and_attributes() {
        let text = "<a x=\"1\">\n  <b  y='2'/>\n</a>";
        let doc = parse(text).unwrap();
        let a = doc.root.unwrap();
        assert_eq!(a.pos, 0);
        assert_eq!(a.attrs[0].pos, 3);
        assert_eq!(a.attrs[0].value_pos, 6);
        let b = &a.children[0];
        assert_eq!(&text[b.pos..b.pos + 2], "<b");
        assert_eq!(&text[b.attrs[0].pos..b.attrs[0].pos + 1], "y");
        assert_eq!(&text[b.attrs[0].value_pos..b.attrs[0].value_pos + 1], "2");
    }

    #[test]
    fn entities_are_unescaped() {
        let doc = parse("<a d=\"x &amp; y\"/>").unwrap();
        assert_eq!(doc.root.unwrap().attrs[0].value, "x & y");
    }

    #[test]
    fn unclosed_and_mismatched_tags_are_errors() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("<a x=1/>").is_err());
        assert!(parse("<a x=\"1\" x=\"2\"/>").is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "<a>".repeat(10_000);
        assert!(parse(&text).is_err());
    }
}
