//! `report.md`: a [`Page`] as Markdown. Blocks are separated by one blank line; charts show their
//! fallback (a table, or nothing where the page has the table beside them).

use std::fmt::Write;

use super::page::{Block, Inline, Page, Table, Tone};

pub fn render(page: &Page) -> String {
    let blocks: Vec<String> = page
        .blocks
        .iter()
        .map(block)
        .filter(|b| !b.is_empty())
        .collect();
    blocks.join("\n")
}

/// One block, ending in a newline; empty when it shows nothing in Markdown.
fn block(b: &Block) -> String {
    match b {
        Block::Heading(level, s) => format!("{} {s}\n", "#".repeat(usize::from(*level))),
        Block::Paragraph(_, line) => format!("{}\n", inlines(line)),
        Block::List(tone, items) => items
            .iter()
            .map(|i| match tone {
                // A warning in a list is the whole item in bold.
                Tone::Warning => format!("- **{}**\n", inlines(i)),
                _ => format!("- {}\n", inlines(i)),
            })
            .collect(),
        Block::Table(t) => table(t),
        Block::Figure { fallback, .. } => fallback
            .iter()
            .map(block)
            .filter(|b| !b.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        Block::Footer(line) => format!("---\n{}\n", inlines(line)),
    }
}

fn inlines(line: &[Inline]) -> String {
    line.iter()
        .map(|i| match i {
            Inline::Text(s) => s.clone(),
            Inline::Strong(s) => format!("**{s}**"),
            Inline::Code(s) => format!("`{s}`"),
        })
        .collect()
}

/// A Markdown table; `|` in cells is escaped.
fn table(t: &Table) -> String {
    let cell = |s: &String| s.replace('|', "\\|");
    let row = |cells: &[String]| cells.iter().map(cell).collect::<Vec<_>>().join(" | ");
    let mut out = format!("| {} |\n", row(&t.header));
    let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
    for r in &t.rows {
        let _ = writeln!(out, "| {} |", row(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::page::*;
    use super::*;

    #[test]
    fn blocks_are_separated_by_one_blank_line_and_empty_ones_leave_none() {
        let mut p = Page::default();
        p.heading(1, "T");
        p.charts(vec![]);
        p.para("a");
        p.list(&[]);
        p.table(&["x", "y"], vec![vec!["1|2".into(), "3".into()]]);
        p.blocks.push(Block::Footer(vec![
            Inline::Text("v ".into()),
            Inline::Code("c".into()),
        ]));
        assert_eq!(
            render(&p),
            "# T\n\na\n\n| x | y |\n|---|---|\n| 1\\|2 | 3 |\n\n---\nv `c`\n"
        );
    }

    #[test]
    fn emphasis_and_warnings_are_bold() {
        let mut p = Page::default();
        p.blocks.push(Block::Paragraph(
            Tone::Warning,
            vec![Inline::Text("a ".into()), Inline::Strong("b".into())],
        ));
        p.blocks
            .push(Block::List(Tone::Warning, vec![text("w1"), text("w2")]));
        assert_eq!(render(&p), "a **b**\n\n- **w1**\n- **w2**\n");
    }
}
