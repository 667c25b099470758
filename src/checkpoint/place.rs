//! A place: where every stream of an input stands, as saved text.
//!
//! An input may read several independent streams whose positions cannot be compared, such
//! as the writers of a central journal directory, each with its own sequence numbers. A
//! place holds one position per stream, one per line, the stream that moved last at the
//! end. A position names its stream by the text before its first `;` (a journal cursor's
//! `s=` part, its sequence-number space); a position without `;` belongs to the one
//! anonymous stream. A single-stream place is therefore just its one position, which is
//! what cursor files held before places had more than one line.

/// The positions of a place, oldest move first.
pub(crate) fn positions(place: &str) -> impl DoubleEndedIterator<Item = &str> {
    place.split('\n').filter(|p| !p.is_empty())
}

/// The stream a position belongs to.
pub(crate) fn stream_of(pos: &str) -> &str {
    pos.split_once(';').map_or("", |(s, _)| s)
}

/// The position of the stream that moved last.
pub(crate) fn newest(place: &str) -> Option<&str> {
    positions(place).next_back()
}

/// The position `place` holds for `stream`, if any.
pub(crate) fn position_of<'a>(place: &'a str, stream: &str) -> Option<&'a str> {
    positions(place).find(|p| stream_of(p) == stream)
}

pub(crate) fn join<'a>(positions: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for p in positions {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_positions() {
        let place = "s=aa;i=1\ns=bb;i=7\n";
        assert_eq!(
            positions(place).collect::<Vec<_>>(),
            ["s=aa;i=1", "s=bb;i=7"]
        );
        assert_eq!(newest(place), Some("s=bb;i=7"));
        assert_eq!(position_of(place, "s=aa"), Some("s=aa;i=1"));
        assert_eq!(position_of(place, "s=cc"), None);
        assert_eq!(stream_of("plain"), "");
        assert_eq!(newest(""), None);
        assert_eq!(join(["x", "y"].into_iter()), "x\ny");
    }
}
