//! The rows of a coupon CSV as a spreadsheet exports it (RFC 4180), read as
//! the bytes arrive: [`CodeRows`] is fed chunks of any size and yields one
//! [`Row`] at a time, holding no more than one field of at most
//! [`MAX_LINE`] bytes whatever the file's size.
//!
//! - The header is the first row that is not blank. Its column named `code`
//!   (any case, surrounding white space ignored) holds the codes; every other
//!   column is ignored. The first `code` column counts.
//! - Fields may be quoted, with commas, line breaks and doubled quotes inside;
//!   lines end in CRLF, LF or CR; UTF-8 byte-order marks may start the file.
//! - Blank rows (no field holding anything but white space) are skipped, as
//!   are empty lines.
//! - A data row yields its code (read by [`CouponCode::parse`], so in any
//!   case, upper-cased), or is rejected with the row's first line number and
//!   a reason: a code cell that is not a code, that is not UTF-8, or a row
//!   whose fields hold more than [`MAX_LINE`] bytes together.
//!
//! The parsing itself is `csv-core`'s (the push parser under the `csv`
//! crate); this module only keeps the `code` column and the line numbers.

use csv_core::{ReadFieldResult, Reader};
use domain::ordering::CouponCode;

/// The most bytes a row's fields may hold together (a line of 1 KiB, less
/// its commas, quotes and line end). A longer row is rejected without being
/// buffered: only its `code` field is kept, and never more than this.
pub const MAX_LINE: usize = 1_024;

/// Why a code cell is not a code.
pub const INVALID_CODE: &str = "must be 4 to 64 characters of A-Z, 0-9 or '-'";
/// Why a code cell was not read.
pub const NOT_UTF8: &str = "not UTF-8 text";
/// Why a row over [`MAX_LINE`] was not read.
pub const TOO_LONG: &str = "line too long";

const BOM: &[u8] = b"\xef\xbb\xbf";

/// One row of the file, as the importer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// Nothing but empty or white-space fields: skipped.
    Blank,
    /// The header row, with the index of its `code` column (none when it
    /// has no such column).
    Header { code_column: Option<usize> },
    /// A data row's code.
    Code(CouponCode),
    /// A data row that holds no valid code: the line it starts on, and why.
    Rejected { line: u64, reason: &'static str },
}

/// A cell's text without the white space (and byte-order marks) around it.
fn trim_cell(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// Reads the rows of a coupon CSV from chunks of bytes (see the module).
#[derive(Debug)]
pub struct CodeRows {
    reader: Reader,
    /// The `code` column once the header has been read; `None` before.
    header: Option<Option<usize>>,
    /// The first `code` column of the header row being read.
    header_code: Option<usize>,
    /// How many bytes of a leading byte-order mark have been matched; `None`
    /// once the marks at the start of the file are behind.
    bom: Option<usize>,
    /// The current field's bytes: at most [`MAX_LINE`]; beyond that they
    /// are dropped and `overflow` is set.
    field: Box<[u8]>,
    field_len: usize,
    overflow: bool,
    /// The current row: no byte of it read yet, the line it starts on, its
    /// next field's index, the bytes its fields held so far, whether any
    /// field held anything, and what its `code` field said.
    at_row_start: bool,
    line: u64,
    index: usize,
    bytes: usize,
    blank: bool,
    code: Option<Result<CouponCode, &'static str>>,
}

impl Default for CodeRows {
    fn default() -> Self {
        Self::new()
    }
}

impl CodeRows {
    pub fn new() -> Self {
        // RFC 4180: comma, double quotes (doubled inside), CRLF or LF or CR.
        let mut reader = Reader::new();
        // csv-core strips a byte-order mark from its first input when that
        // input is 3 bytes or more, so whether it does would depend on the
        // chunking; marks are stripped here instead. An empty line read
        // first (skipped, as empty lines are) turns its stripping off.
        let (_, read, _) = reader.read_field(b"\n", &mut [0; 1]);
        debug_assert_eq!(read, 1);
        reader.set_line(1);
        Self {
            reader,
            header: None,
            header_code: None,
            bom: Some(0),
            field: vec![0; MAX_LINE].into_boxed_slice(),
            field_len: 0,
            overflow: false,
            at_row_start: true,
            line: 1,
            index: 0,
            bytes: 0,
            blank: true,
            code: None,
        }
    }

    /// Whether the header row has been read.
    pub fn header_read(&self) -> bool {
        self.header.is_some()
    }

    /// Reads `input` until a row ends, and returns it with `input` advanced
    /// past it; `None` once `input` is used up (the row goes on in the next
    /// chunk). Call again until it returns `None`, then feed the next chunk.
    pub fn next_row(&mut self, input: &mut &[u8]) -> Option<Row> {
        if let Some(matched) = self.bom {
            // Marks may be split across chunks (and repeated, by tools that
            // add one to a file that had one): match them byte by byte.
            let mut matched = matched;
            loop {
                match input.first() {
                    None => {
                        self.bom = Some(matched);
                        return None;
                    }
                    Some(b) if *b == BOM[matched] => {
                        matched = (matched + 1) % BOM.len();
                        *input = &input[1..];
                    }
                    Some(_) => break,
                }
            }
            self.bom = None;
            // Part of a mark that is not one after all starts the first
            // field (which it cannot end, having no delimiter in it).
            let mut partial = &BOM[..matched];
            let row = self.parse(&mut partial);
            debug_assert!(row.is_none() && partial.is_empty());
        }
        self.parse(input)
    }

    /// Ends the file: the last row, if it had no line end. Call until `None`.
    pub fn finish(&mut self) -> Option<Row> {
        if let Some(matched) = self.bom.take() {
            let mut partial = &BOM[..matched];
            let row = self.parse(&mut partial);
            debug_assert!(row.is_none());
        }
        if self.at_row_start {
            return None;
        }
        loop {
            let (result, _, nout) = self
                .reader
                .read_field(&[], &mut self.field[self.field_len..]);
            if let Some(row) = self.step(&result, nout) {
                return Some(row);
            }
            if matches!(result, ReadFieldResult::End) {
                return None;
            }
        }
    }

    fn parse(&mut self, input: &mut &[u8]) -> Option<Row> {
        loop {
            if self.at_row_start {
                // Line ends between rows are empty lines, which csv-core
                // skips too; skipping them here gives each row the line it
                // starts on.
                let skip = input
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                let newlines = input[..skip].iter().filter(|b| **b == b'\n').count();
                self.reader.set_line(self.reader.line() + newlines as u64);
                *input = &input[skip..];
                if input.is_empty() {
                    return None;
                }
                self.at_row_start = false;
                self.line = self.reader.line();
            }
            if input.is_empty() {
                // (csv-core reads an empty input as the end of the file.)
                return None;
            }
            let (result, nin, nout) = self
                .reader
                .read_field(input, &mut self.field[self.field_len..]);
            *input = &input[nin..];
            if let Some(row) = self.step(&result, nout) {
                return Some(row);
            }
            if matches!(result, ReadFieldResult::InputEmpty | ReadFieldResult::End) {
                return None;
            }
        }
    }

    /// Takes in what one call of the parser did; a row when one ended.
    fn step(&mut self, result: &ReadFieldResult, nout: usize) -> Option<Row> {
        self.field_len += nout;
        self.bytes = self.bytes.saturating_add(nout);
        match result {
            ReadFieldResult::InputEmpty | ReadFieldResult::End => None,
            ReadFieldResult::OutputFull => {
                // The field is longer than any cell read here: drop it.
                self.overflow = true;
                self.field_len = 0;
                None
            }
            ReadFieldResult::Field { record_end } => {
                self.end_field();
                record_end.then(|| self.end_row())
            }
        }
    }

    fn end_field(&mut self) {
        let text = if self.overflow {
            None
        } else {
            std::str::from_utf8(&self.field[..self.field_len])
                .ok()
                .map(trim_cell)
        };
        if self.overflow || text.is_none_or(|t| !t.is_empty()) {
            self.blank = false;
        }
        match self.header {
            None => {
                if self.header_code.is_none()
                    && text.is_some_and(|t| t.eq_ignore_ascii_case("code"))
                {
                    self.header_code = Some(self.index);
                }
            }
            Some(column) if column == Some(self.index) => {
                self.code = Some(match text {
                    _ if self.overflow => Err(TOO_LONG),
                    None => Err(NOT_UTF8),
                    Some(t) => CouponCode::parse(t).map_err(|_| INVALID_CODE),
                });
            }
            Some(_) => {}
        }
        self.index += 1;
        self.field_len = 0;
        self.overflow = false;
    }

    fn end_row(&mut self) -> Row {
        let row = if self.blank {
            Row::Blank
        } else if self.header.is_none() {
            self.header = Some(self.header_code);
            Row::Header {
                code_column: self.header_code,
            }
        } else if self.bytes > MAX_LINE {
            Row::Rejected {
                line: self.line,
                reason: TOO_LONG,
            }
        } else {
            match self.code.take() {
                Some(Ok(code)) => Row::Code(code),
                Some(Err(reason)) => Row::Rejected {
                    line: self.line,
                    reason,
                },
                // A row that stops before the `code` column has an empty code.
                None => Row::Rejected {
                    line: self.line,
                    reason: INVALID_CODE,
                },
            }
        };
        self.at_row_start = true;
        self.index = 0;
        self.bytes = 0;
        self.blank = true;
        self.code = None;
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `text` fed in chunks of `size` bytes, blank rows left out.
    fn rows(text: &[u8], size: usize) -> Vec<Row> {
        let mut parser = CodeRows::new();
        let mut out = Vec::new();
        for chunk in text.chunks(size) {
            let mut input = chunk;
            while let Some(row) = parser.next_row(&mut input) {
                out.push(row);
            }
            assert!(input.is_empty());
        }
        while let Some(row) = parser.finish() {
            out.push(row);
        }
        out.retain(|r| *r != Row::Blank);
        out
    }

    fn code(raw: &str) -> Row {
        Row::Code(CouponCode::parse(raw).expect("valid"))
    }

    fn every_chunking(text: &[u8], expected: &[Row]) {
        for size in [1, 2, 3, 5, 7, 64, text.len().max(1)] {
            assert_eq!(rows(text, size), expected, "chunks of {size}: {text:?}");
        }
    }

    #[test]
    fn a_spreadsheet_export_gives_its_code_column() {
        let header = Row::Header {
            code_column: Some(1),
        };
        let text = "\u{feff}note,Code,extra\r\n\"first, with a comma\",aaaa-0001,x\r\n\
                    \"multi\r\nline \"\"quoted\"\"\",\"BBBB-0002\",\r\n,,\r\n\r\nplain, CCCC-0003 \r\n";
        every_chunking(
            text.as_bytes(),
            &[
                header,
                code("AAAA-0001"),
                code("BBBB-0002"),
                code("CCCC-0003"),
            ],
        );
    }

    #[test]
    fn rows_are_numbered_by_the_line_they_start_on() {
        let text =
            "\n\ncode,note\nok-line,1\n\"x\ny\",\r\n\r\nbad code,\"two\nlines\"\nlast\r\nxyz";
        every_chunking(
            text.as_bytes(),
            &[
                Row::Header {
                    code_column: Some(0),
                },
                code("OK-LINE"),
                Row::Rejected {
                    line: 5,
                    reason: INVALID_CODE,
                },
                Row::Rejected {
                    line: 8,
                    reason: INVALID_CODE,
                },
                code("LAST"),
                Row::Rejected {
                    line: 11,
                    reason: INVALID_CODE,
                },
            ],
        );
    }

    #[test]
    fn a_header_without_a_code_column_is_reported_and_a_lone_mark_is_no_header() {
        every_chunking(
            b"codes,note\nAAAA\n",
            &[
                Row::Header { code_column: None },
                Row::Rejected {
                    line: 2,
                    reason: INVALID_CODE,
                },
            ],
        );
        every_chunking(b"\xef\xbb\xbf", &[]);
        every_chunking(
            b"\xef\xbb\xbf\xef\xbb\xbf\"code\"\nAAAA",
            &[
                Row::Header {
                    code_column: Some(0),
                },
                code("AAAA"),
            ],
        );
        every_chunking(b"\xef\xbb\xbf\r\n \n", &[]);
        // Two bytes of a mark, then not the third: they are part of the cell.
        every_chunking(b"\xef\xbbcode\n", &[Row::Header { code_column: None }]);
    }

    #[test]
    fn a_row_over_the_limit_is_rejected_and_its_cells_are_not_kept() {
        let long = "N".repeat(MAX_LINE);
        // 9 + 1,015: the fields hold 1,024 bytes, the most a row may.
        let text = format!(
            "code,note\nAAAA-0001,{long}\n\"{long}\nB\",x\nCCCC-0003,{}\n",
            &long[9..]
        );
        every_chunking(
            text.as_bytes(),
            &[
                Row::Header {
                    code_column: Some(0),
                },
                Row::Rejected {
                    line: 2,
                    reason: TOO_LONG,
                },
                Row::Rejected {
                    line: 3,
                    reason: TOO_LONG,
                },
                code("CCCC-0003"),
            ],
        );
        // An unclosed quote makes the rest of the file one cell: dropped.
        let text = format!("code\n\"AAAA{}", "A\n".repeat(10_000));
        assert_eq!(
            rows(text.as_bytes(), 4_096),
            [
                Row::Header {
                    code_column: Some(0)
                },
                Row::Rejected {
                    line: 2,
                    reason: TOO_LONG
                }
            ]
        );
    }

    #[test]
    fn a_code_cell_that_is_not_utf8_is_rejected() {
        every_chunking(
            b"note,code\n\xff,AAAA\nx,\xffAAA\n",
            &[
                Row::Header {
                    code_column: Some(1),
                },
                code("AAAA"),
                Row::Rejected {
                    line: 3,
                    reason: NOT_UTF8,
                },
            ],
        );
    }
}
