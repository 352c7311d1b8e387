//! The JavaScript stack of a worker's main thread as one `stack` message
//! line for the arbiter (see src/protocol/messages.ts), and which V8 the
//! addon's C++ binding to the stack API was written for. The binding itself
//! (crates/node/src/js_stack.rs) needs Node; this part is pure.

use std::fmt::Write;

/// One frame, as V8's `StackFrame` gives it (line and column from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: i32,
    pub column: i32,
}

/// Frames read per stack: the top of a deep recursion is what names the loop.
pub const MAX_FRAMES: usize = 20;

/// A pipe write up to this size is atomic: the line never tears a line the
/// worker's JavaScript writes to the same pipe.
pub const MAX_LINE: usize = 4096;

/// The V8 versions whose C++ ABI the binding was checked against: the
/// `HandleScope` size (three pointers), `Local<T>` as one pointer returned in
/// a register, `StackFrame::GetLocation` returning two ints, and the mangled
/// names. Another V8 may have changed any of them, silently.
pub fn check_v8_version(version: &str) -> Result<(), String> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("11"), Some("3")) => Ok(()),
        _ => Err(format!(
            "V8 {version} is not supported for JavaScript stacks (the binding is checked against V8 11.3, Node.js 20)"
        )),
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn frames_line(frames: &[Frame], total: usize) -> String {
    let mut out = String::from(r#"{"type":"stack","frames":["#);
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"function":"#);
        push_json_string(&mut out, &f.function);
        out.push_str(r#","file":"#);
        push_json_string(&mut out, &f.file);
        let _ = write!(out, r#","line":{},"column":{}}}"#, f.line, f.column);
    }
    let _ = writeln!(out, r#"],"total":{total}}}"#);
    out
}

/// The `stack` line for `frames` (the top ones of `total`), with as many
/// top frames as fit in `MAX_LINE` bytes. No frames: no JavaScript was
/// running (the event loop was waiting).
pub fn stack_line(frames: &[Frame], total: usize) -> String {
    let mut shown = frames.len().min(MAX_FRAMES);
    loop {
        let line = frames_line(&frames[..shown], total.max(shown));
        if line.len() <= MAX_LINE || shown == 0 {
            return line;
        }
        shown -= 1;
    }
}

/// The `stack` line saying why this worker cannot read its stack (a short
/// reason of rwsgi's own: well within `MAX_LINE`).
pub fn unavailable_line(reason: &str) -> String {
    let mut out = String::from(r#"{"type":"stack","frames":null,"error":"#);
    push_json_string(&mut out, reason);
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str) -> Frame {
        Frame {
            function: function.into(),
            file: file.into(),
            line: 3,
            column: 9,
        }
    }

    #[test]
    fn frames_are_one_json_line_with_the_top_first() {
        let line = stack_line(
            &[frame("spin", "/app/a\"b.js"), frame("", "node:internal")],
            2,
        );
        assert_eq!(
            line,
            "{\"type\":\"stack\",\"frames\":[{\"function\":\"spin\",\"file\":\"/app/a\\\"b.js\",\"line\":3,\"column\":9},\
             {\"function\":\"\",\"file\":\"node:internal\",\"line\":3,\"column\":9}],\"total\":2}\n"
        );
    }

    #[test]
    fn an_empty_stack_is_an_empty_list() {
        assert_eq!(
            stack_line(&[], 0),
            "{\"type\":\"stack\",\"frames\":[],\"total\":0}\n"
        );
    }

    #[test]
    fn a_long_stack_keeps_its_top_frames_within_one_atomic_write() {
        let long = "x".repeat(600);
        let frames: Vec<Frame> = (0..30).map(|i| frame(&format!("f{i}"), &long)).collect();
        let line = stack_line(&frames, 45);
        assert!(line.len() <= MAX_LINE, "{}", line.len());
        assert!(line.contains("\"function\":\"f0\""), "the top frame stays");
        assert!(!line.contains("\"function\":\"f7\""), "the bottom ones go");
        assert!(line.ends_with(",\"total\":45}\n"), "the total is kept");
    }

    #[test]
    fn control_characters_are_escaped() {
        let line = unavailable_line("a\u{1}b\nc");
        assert_eq!(
            line,
            "{\"type\":\"stack\",\"frames\":null,\"error\":\"a\\u0001b\\nc\"}\n"
        );
    }

    #[test]
    fn only_the_checked_v8_is_accepted() {
        assert!(check_v8_version("11.3.244.8-node.38").is_ok());
        assert!(check_v8_version("12.4.254.21-node.33").is_err());
        assert!(check_v8_version("").is_err());
    }
}
