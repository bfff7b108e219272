//! Class labels: the COCO category list and the parser for the `names` metadata of Ultralytics
//! ONNX exports.
//!
//! Pure data and parsing; this module must not read files or talk to ONNX Runtime.

/// COCO category names indexed by the 91-id COCO space (TF Object Detection API exports): index
/// `id` holds the name of category `id`, `None` for the ten ids COCO never used (and for id 0).
pub const COCO91: [Option<&str>; 91] = [
    None,
    Some("person"),
    Some("bicycle"),
    Some("car"),
    Some("motorcycle"),
    Some("airplane"),
    Some("bus"),
    Some("train"),
    Some("truck"),
    Some("boat"),
    Some("traffic light"),
    Some("fire hydrant"),
    None,
    Some("stop sign"),
    Some("parking meter"),
    Some("bench"),
    Some("bird"),
    Some("cat"),
    Some("dog"),
    Some("horse"),
    Some("sheep"),
    Some("cow"),
    Some("elephant"),
    Some("bear"),
    Some("zebra"),
    Some("giraffe"),
    None,
    Some("backpack"),
    Some("umbrella"),
    None,
    None,
    Some("handbag"),
    Some("tie"),
    Some("suitcase"),
    Some("frisbee"),
    Some("skis"),
    Some("snowboard"),
    Some("sports ball"),
    Some("kite"),
    Some("baseball bat"),
    Some("baseball glove"),
    Some("skateboard"),
    Some("surfboard"),
    Some("tennis racket"),
    Some("bottle"),
    None,
    Some("wine glass"),
    Some("cup"),
    Some("fork"),
    Some("knife"),
    Some("spoon"),
    Some("bowl"),
    Some("banana"),
    Some("apple"),
    Some("sandwich"),
    Some("orange"),
    Some("broccoli"),
    Some("carrot"),
    Some("hot dog"),
    Some("pizza"),
    Some("donut"),
    Some("cake"),
    Some("chair"),
    Some("couch"),
    Some("potted plant"),
    Some("bed"),
    None,
    Some("dining table"),
    None,
    None,
    Some("toilet"),
    None,
    Some("tv"),
    Some("laptop"),
    Some("mouse"),
    Some("remote"),
    Some("keyboard"),
    Some("cell phone"),
    Some("microwave"),
    Some("oven"),
    Some("toaster"),
    Some("sink"),
    Some("refrigerator"),
    None,
    Some("book"),
    Some("clock"),
    Some("vase"),
    Some("scissors"),
    Some("teddy bear"),
    Some("hair drier"),
    Some("toothbrush"),
];

/// The 80 COCO names in the contiguous order YOLO exports use (class 0 = person).
pub fn coco80() -> Vec<String> {
    COCO91.iter().flatten().map(|s| (*s).to_owned()).collect()
}

/// Parses the `names` metadata of an Ultralytics export, a Python dict literal such as
/// `{0: 'person', 1: "o'clock"}`, into a list indexed by class id.
///
/// Returns `None` when the text is not such a dict or its keys are not exactly `0..n`.
pub fn parse_ultralytics_names(text: &str) -> Option<Vec<String>> {
    let mut rest = text.trim().strip_prefix('{')?.trim_start();
    let mut pairs: Vec<(usize, String)> = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            if !after.trim().is_empty() {
                return None;
            }
            break;
        }
        let colon = rest.find(':')?;
        let id: usize = rest[..colon].trim().parse().ok()?;
        rest = rest[colon + 1..].trim_start();
        let (name, after) = python_string(rest)?;
        pairs.push((id, name));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with('}') {
            return None;
        }
    }
    pairs.sort_by_key(|(id, _)| *id);
    if pairs.iter().enumerate().any(|(i, (id, _))| i != *id) {
        return None;
    }
    Some(pairs.into_iter().map(|(_, name)| name).collect())
}

/// A single- or double-quoted Python string literal at the start of `s` (with `\\`, `\'` and `\"`
/// escapes) and the text after it.
fn python_string(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            c if c == quote => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco80_is_the_eighty_used_ids_in_order() {
        let names = coco80();
        assert_eq!(names.len(), 80);
        assert_eq!(names[0], "person");
        assert_eq!(names[3], "motorcycle");
        assert_eq!(names[41], "cup");
        assert_eq!(names[79], "toothbrush");
    }

    #[test]
    fn ultralytics_names_parse_with_both_quote_styles() {
        let names = parse_ultralytics_names("{0: 'person', 1: \"o'clock\", 2: 'a\\'b'}").unwrap();
        assert_eq!(names, vec!["person", "o'clock", "a'b"]);
    }

    #[test]
    fn ultralytics_names_with_gaps_or_garbage_are_refused() {
        assert_eq!(parse_ultralytics_names("{0: 'a', 2: 'b'}"), None);
        assert_eq!(parse_ultralytics_names("[0, 1]"), None);
        assert_eq!(parse_ultralytics_names("{0: 'a'"), None);
        assert_eq!(parse_ultralytics_names("{0: 'a'} x"), None);
        assert_eq!(parse_ultralytics_names("{}"), Some(vec![]));
    }
}
