//! The report laid out once, as data: a [`Page`] of blocks (headings, paragraphs, lists, tables,
//! charts) with inline runs (text, emphasis, code), built once from a [`super::Report`] (or a
//! comparison) and rendered by [`super::markdown`] and [`super::html`]. A new section is a function
//! that pushes blocks; neither renderer knows what a section says.

/// A run of text inside a paragraph, list item or footer.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    Text(String),
    /// `**x**` in Markdown, `<strong>` in HTML.
    Strong(String),
    /// `` `x` `` in Markdown, `<code>` in HTML.
    Code(String),
}

/// A paragraph or list item: inline runs read in order.
pub type Line = Vec<Inline>;

pub fn text(s: impl Into<String>) -> Line {
    vec![Inline::Text(s.into())]
}

/// How a paragraph or list stands out. HTML gives it a class; Markdown shows it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// A finished run's status.
    Done,
    /// A cut-off run's status.
    CutOff,
    /// A caution: an estimate where a measurement is expected, runs that do not compare.
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str], rows: Vec<Vec<String>>) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        }
    }
}

/// A line of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line (the idle baseline).
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    pub name: String,
    pub y: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub color: &'static str,
    pub value: f64,
    /// 95% interval drawn as an error bar.
    pub ci95: Option<[f64; 2]>,
}

/// A chart as data; [`super::svg`] draws it.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    /// Lines through points, with an optional dashed reference line.
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        series: Vec<Series>,
        hline: Option<HLine>,
    },
    /// Bars from zero with 95% error bars; `narrow` charts are a third of the page wide.
    Bars {
        title: String,
        y_label: String,
        bars: Vec<Bar>,
        narrow: bool,
    },
    /// One row of cells per label, coloured by value over the row's mean.
    Heatmap {
        title: String,
        row_labels: Vec<String>,
        rows: Vec<Vec<u64>>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Level 1 is the page's title, level 2 a section.
    Heading(u8, String),
    Paragraph(Tone, Line),
    List(Tone, Vec<Line>),
    Table(Table),
    /// Charts side by side. HTML draws `charts`; Markdown, which has none, shows `fallback`
    /// (the figures as a table, or nothing where a table beside it already has them).
    Figure {
        charts: Vec<Chart>,
        fallback: Vec<Block>,
    },
    /// The closing line: versions and where the page came from.
    Footer(Line),
}

/// A whole report or comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// The HTML `<title>`.
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Page {
    pub fn heading(&mut self, level: u8, s: impl Into<String>) {
        self.blocks.push(Block::Heading(level, s.into()));
    }

    pub fn para(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Paragraph(Tone::Plain, text(s)));
    }

    /// A bulleted list of plain sentences; nothing when there are none.
    pub fn list(&mut self, items: &[String]) {
        if !items.is_empty() {
            self.blocks.push(Block::List(
                Tone::Plain,
                items.iter().map(|s| text(s.clone())).collect(),
            ));
        }
    }

    pub fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table(Table::new(header, rows)));
    }

    /// Charts for HTML only (Markdown shows the tables beside them).
    pub fn charts(&mut self, charts: Vec<Chart>) {
        self.blocks.push(Block::Figure {
            charts,
            fallback: Vec::new(),
        });
    }
}
