//! Text tables in the boxed style of Trove's CLIs, so `ftrove list` and `ftrove show` look
//! like `trove list` and `trove show`:
//!
//! ```text
//! +----+------+
//! | ID | Name |
//! +----+------+
//! | 1  | m1   |
//! +----+------+
//! ```
//!
//! Cells may span several lines. Control characters from the server (escape sequences) are
//! replaced, so a hostile name cannot drive the terminal.

/// A table with a header row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank and extra cells are dropped.
    pub fn push_row(&mut self, mut row: Vec<String>) {
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The Property/Value table of Trove's `show`, rows sorted by property name.
    pub fn properties(mut rows: Vec<(String, String)>) -> Table {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut table = Table::new(["Property", "Value"]);
        for (property, value) in rows {
            table.push_row(vec![property, value]);
        }
        table
    }

    /// The table as text, ending with a newline.
    pub fn render(&self) -> String {
        let header_lines: Vec<Vec<String>> = self.headers.iter().map(|h| cell_lines(h)).collect();
        let row_lines: Vec<Vec<Vec<String>>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|c| cell_lines(c)).collect())
            .collect();

        let mut widths: Vec<usize> = header_lines.iter().map(|lines| max_width(lines)).collect();
        for row in &row_lines {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(max_width(cell));
            }
        }

        let rule = {
            let mut rule = String::from("+");
            for width in &widths {
                rule.push_str(&"-".repeat(width + 2));
                rule.push('+');
            }
            rule.push('\n');
            rule
        };

        let mut out = String::new();
        out.push_str(&rule);
        push_row(&mut out, &header_lines, &widths);
        out.push_str(&rule);
        for row in &row_lines {
            push_row(&mut out, row, &widths);
        }
        if !row_lines.is_empty() {
            out.push_str(&rule);
        }
        out
    }
}

fn push_row(out: &mut String, cells: &[Vec<String>], widths: &[usize]) {
    let height = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
    for line_idx in 0..height {
        out.push('|');
        for (cell, width) in cells.iter().zip(widths) {
            let text = cell.get(line_idx).map(String::as_str).unwrap_or("");
            let pad = width.saturating_sub(text.chars().count());
            out.push(' ');
            out.push_str(text);
            out.push_str(&" ".repeat(pad + 1));
            out.push('|');
        }
        out.push('\n');
    }
}

/// A cell split into lines, with control characters made harmless.
fn cell_lines(cell: &str) -> Vec<String> {
    let lines: Vec<String> = cell
        .split('\n')
        .map(|line| {
            line.trim_end_matches('\r')
                .chars()
                .map(|c| match c {
                    '\t' => ' ',
                    c if c.is_control() => '?',
                    c => c,
                })
                .collect()
        })
        .collect();
    if lines.is_empty() {
        vec![String::new()]
    } else {
        lines
    }
}

fn max_width(lines: &[String]) -> usize {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_boxed_and_aligned() {
        let mut t = Table::new(["ID", "Name", "Size"]);
        t.push_row(vec!["a1".into(), "m1".into(), "2".into()]);
        t.push_row(vec!["b".into(), "replica-one".into()]);
        assert_eq!(
            t.render(),
            "\
+----+-------------+------+
| ID | Name        | Size |
+----+-------------+------+
| a1 | m1          | 2    |
| b  | replica-one |      |
+----+-------------+------+
"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let t = Table::new(["ID", "Name"]);
        assert_eq!(t.render(), "+----+------+\n| ID | Name |\n+----+------+\n");
    }

    #[test]
    fn properties_are_sorted_and_multiline_cells_span_lines() {
        let t = Table::properties(vec![
            ("status".into(), "ERROR".into()),
            ("fault".into(), "disk full\nretry later".into()),
            ("id".into(), "é1".into()),
        ]);
        assert_eq!(
            t.render(),
            "\
+----------+-------------+
| Property | Value       |
+----------+-------------+
| fault    | disk full   |
|          | retry later |
| id       | é1          |
| status   | ERROR       |
+----------+-------------+
"
        );
    }

    #[test]
    fn control_characters_are_neutralised() {
        let mut t = Table::new(["Name"]);
        t.push_row(vec!["evil\u{1b}[31m\tx".into()]);
        let out = t.render();
        assert!(!out.contains('\u{1b}'));
        assert!(out.contains("evil?[31m x"));
    }
}
