//! Go's `text/tabwriter` (with kubectl's `RememberWidths` from liggitt/tabwriter), so that
//! tables and `describe` line up exactly as kubectl's do.
//!
//! Text is cells separated by `\t`; the text after a line's last tab is not a cell of a column
//! and is never padded. A column block is a run of consecutive lines that all have a cell in
//! that column; each block is as wide as its widest cell plus `padding`, at least `minwidth`.
//! kubectl's tables use minwidth 6, padding 3; `describe` uses minwidth 0, padding 2.

/// A buffer of lines formatted on [`TabWriter::flush`].
#[derive(Debug)]
pub struct TabWriter {
    minwidth: usize,
    padding: usize,
    /// Widths per column index seen in earlier flushes (kubectl's `RememberWidths`), so that
    /// the rows of `get -w`, flushed one by one, stay aligned with the table above them.
    remember: bool,
    maxwidths: Vec<usize>,
    /// Complete lines, split into cells.
    lines: Vec<Vec<String>>,
}

impl TabWriter {
    /// kubectl's table writer (`printers.GetNewTabWriter`).
    pub fn table() -> TabWriter {
        TabWriter {
            minwidth: 6,
            padding: 3,
            remember: true,
            maxwidths: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// kubectl's `describe` writer.
    pub fn describe() -> TabWriter {
        TabWriter {
            minwidth: 0,
            padding: 2,
            remember: false,
            maxwidths: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Adds text; every `\n` ends a line (a trailing partial line is kept as a line too).
    pub fn write(&mut self, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        for line in text.split('\n') {
            self.lines
                .push(line.split('\t').map(str::to_string).collect());
        }
    }

    /// Adds one line of cells.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        self.lines
            .push(cells.iter().map(|c| c.as_ref().to_string()).collect());
    }

    /// Formats the buffered lines and empties the buffer.
    pub fn flush(&mut self) -> String {
        let mut out = String::new();
        let mut widths = Vec::new();
        let n = self.lines.len();
        self.format(&mut out, &mut widths, 0, n);
        self.lines.clear();
        out
    }

    fn format(
        &mut self,
        out: &mut String,
        widths: &mut Vec<usize>,
        mut line0: usize,
        line1: usize,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            // A cell in this column: print the lines above the block, then size the block.
            self.write_lines(out, widths, line0, this);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 && column + 1 < self.lines[this].len() {
                width = width.max(cell_width(&self.lines[this][column]) + self.padding);
                this += 1;
            }
            if self.remember {
                match self.maxwidths.get_mut(column) {
                    Some(max) if *max > width => width = *max,
                    Some(max) => *max = width,
                    None => {
                        self.maxwidths.resize(column, 0);
                        self.maxwidths.push(width);
                    }
                }
            }
            widths.push(width);
            self.format(out, widths, line0, this);
            widths.pop();
            line0 = this;
        }
        self.write_lines(out, widths, line0, line1);
    }

    fn write_lines(&self, out: &mut String, widths: &[usize], line0: usize, line1: usize) {
        for line in &self.lines[line0..line1] {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if j + 1 < line.len() {
                    if let Some(w) = widths.get(j) {
                        let pad = w.saturating_sub(cell_width(cell));
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            out.push('\n');
        }
    }
}

/// Go counts runes, not bytes.
fn cell_width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last_by_three() {
        let mut w = TabWriter::table();
        w.row(&["NAME", "READY", "STATUS", "AGE"]);
        w.row(&["web-1", "1/1", "Running", "5s"]);
        w.row(&["a-much-longer-name", "0/1", "Pending", "3m"]);
        assert_eq!(
            w.flush(),
            "NAME                 READY   STATUS    AGE\n\
             web-1                1/1     Running   5s\n\
             a-much-longer-name   0/1     Pending   3m\n"
        );
    }

    #[test]
    fn short_columns_get_the_minimum_width() {
        let mut w = TabWriter::table();
        w.row(&["A", "B", "C"]);
        assert_eq!(w.flush(), "A     B     C\n");
    }

    #[test]
    fn widths_are_remembered_across_flushes() {
        let mut w = TabWriter::table();
        w.row(&["NAME", "STATUS"]);
        w.row(&["long-name-here", "Running"]);
        w.flush();
        w.row(&["x", "Pending"]);
        assert_eq!(w.flush(), "x                Pending\n");
    }

    #[test]
    fn describe_blocks_align_separately() {
        let mut w = TabWriter::describe();
        w.write("Name:\tweb\nNamespace:\tdefault\nContainers:\n  main:\n    Ready:\tTrue\n    Restart Count:\t0\n");
        assert_eq!(
            w.flush(),
            "Name:       web\n\
             Namespace:  default\n\
             Containers:\n  \
             main:\n    \
             Ready:          True\n    \
             Restart Count:  0\n"
        );
    }

    #[test]
    fn continuation_lines_keep_the_column() {
        let mut w = TabWriter::describe();
        w.write("Labels:\tapp=web\n\ttier=front\nAnnotations:\t<none>\n");
        assert_eq!(
            w.flush(),
            "Labels:       app=web\n              tier=front\nAnnotations:  <none>\n"
        );
    }
}
