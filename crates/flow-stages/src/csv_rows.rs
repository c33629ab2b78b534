//! CSV rows in bounded memory, on `csv-core` (the parser under the `csv`
//! crate, with its defaults: `,`, `"` quotes doubled inside quoted fields,
//! `\n`, `\r\n` or `\r` between rows, blank lines skipped).
//!
//! The `csv` crate grows its buffer until a row ends, so one endless field
//! takes all memory; here a row longer than the limit is reported as soon
//! as it passes it and skipped to its end without being kept, and the
//! field positions of a row are kept only up to the count the caller
//! expects (the header's).

use std::io::{self, BufRead};

use csv_core::ReadRecordResult;

use crate::limits::RECORD_QUOTE;

/// Reads rows one at a time.
pub(crate) struct CsvRows {
    reader: csv_core::Reader,
    max: usize,
    keep: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
    raw: Vec<u8>,
    /// A row was reported too long before its end: skip the rest of it.
    skipping: bool,
}

/// One row, or why it cannot be one.
#[derive(Debug)]
pub(crate) enum Row<'a> {
    /// The row's fields, unquoted; `raw` is the start of its text.
    Fields {
        line: u64,
        fields: Vec<&'a [u8]>,
        raw: &'a [u8],
    },
    /// The row passed the limit (reported as soon as it did).
    TooLong { line: u64, raw: &'a [u8] },
    /// The row has more fields than the caller said to expect.
    TooManyFields {
        line: u64,
        count: u64,
        raw: &'a [u8],
    },
}

impl CsvRows {
    /// Rows of at most `max` bytes (their line ending aside); with `keep`
    /// false, rows are only counted and none of their bytes kept.
    pub(crate) fn new(max: usize, keep: bool) -> Self {
        CsvRows {
            reader: csv_core::Reader::new(),
            max,
            keep,
            out: vec![0; if keep { 4096 } else { 1 << 16 }],
            ends: vec![0; if keep { 64 } else { 1 << 10 }],
            raw: Vec::new(),
            skipping: false,
        }
    }

    /// The next row, or `None` at the end. A row with more than
    /// `max_fields` fields is [`Row::TooManyFields`] (its fields are counted,
    /// not kept).
    pub(crate) fn next<R: BufRead>(
        &mut self,
        input: &mut R,
        max_fields: usize,
    ) -> io::Result<Option<Row<'_>>> {
        if std::mem::take(&mut self.skipping) {
            loop {
                let buf = input.fill_buf()?;
                let (res, nin, _, _) = self.reader.read_record(buf, &mut self.out, &mut self.ends);
                input.consume(nin);
                match res {
                    ReadRecordResult::Record => break,
                    ReadRecordResult::End => return Ok(None),
                    _ => {}
                }
            }
        }
        let (mut out_len, mut ends_len, mut fields) = (0, 0, 0u64);
        let (mut counted, mut started, mut line) = (0usize, false, 0u64);
        let mut last = [0u8; 2];
        let mut many = false;
        self.raw.clear();
        loop {
            let buf = input.fill_buf()?;
            let line_before = self.reader.line();
            let (res, nin, nout, nend) =
                self.reader
                    .read_record(buf, &mut self.out[out_len..], &mut self.ends[ends_len..]);
            let used = &buf[..nin];
            // Line endings before a row belong to no row.
            let data = if started {
                used
            } else {
                match used.iter().position(|&b| b != b'\r' && b != b'\n') {
                    Some(k) => {
                        started = true;
                        line =
                            line_before + used[..k].iter().filter(|&&b| b == b'\n').count() as u64;
                        &used[k..]
                    }
                    None => &[],
                }
            };
            counted += data.len();
            match data {
                [.., a, b] => last = [*a, *b],
                [b] => last = [last[1], *b],
                [] => {}
            }
            if self.keep && self.raw.len() < RECORD_QUOTE {
                let room = RECORD_QUOTE + 4 - self.raw.len();
                self.raw.extend_from_slice(&data[..data.len().min(room)]);
            }
            input.consume(nin);
            out_len += nout;
            ends_len += nend;
            fields += nend as u64;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if self.keep => {
                    let grown = (self.out.len() * 2).min(self.max.saturating_add(4096));
                    self.out.resize(grown.max(self.out.len() + 1), 0);
                }
                ReadRecordResult::OutputFull => out_len = 0,
                ReadRecordResult::OutputEndsFull if self.keep && self.ends.len() <= max_fields => {
                    let grown = (self.ends.len() * 2).min(max_fields.saturating_add(1));
                    self.ends.resize(grown.max(self.ends.len() + 1), 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    many = self.keep;
                    ends_len = 0;
                }
                ReadRecordResult::Record => {
                    let ending = match last {
                        [b'\r', b'\n'] => 2,
                        [_, b'\n' | b'\r'] => 1,
                        _ => 0,
                    };
                    let raw = &self.raw[..self.raw.len().min(counted - ending)];
                    if counted - ending > self.max {
                        return Ok(Some(Row::TooLong { line, raw }));
                    }
                    if !self.keep {
                        // Counting: positions were not kept.
                        return Ok(Some(Row::Fields {
                            line,
                            fields: Vec::new(),
                            raw: &[],
                        }));
                    }
                    if many || fields > max_fields as u64 {
                        return Ok(Some(Row::TooManyFields {
                            line,
                            count: fields,
                            raw,
                        }));
                    }
                    let mut start = 0;
                    let fields = self.ends[..ends_len]
                        .iter()
                        .map(|&end| {
                            let field = &self.out[start..end];
                            start = end;
                            field
                        })
                        .collect();
                    return Ok(Some(Row::Fields { line, fields, raw }));
                }
                ReadRecordResult::End => return Ok(None),
            }
            // A line ending may follow, but no more than two bytes of it.
            if self.keep && counted > self.max.saturating_add(2) {
                self.skipping = true;
                return Ok(Some(Row::TooLong {
                    line,
                    raw: &self.raw,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `text` read `chunk` bytes at a time, as strings.
    fn rows(text: &str, max: usize, max_fields: usize) -> Vec<String> {
        let mut rows = CsvRows::new(max, true);
        let mut input = io::BufReader::with_capacity(3, text.as_bytes());
        let mut got = Vec::new();
        while let Some(row) = rows.next(&mut input, max_fields).unwrap() {
            got.push(match row {
                Row::Fields { line, fields, raw } => {
                    let fields: Vec<_> =
                        fields.iter().map(|f| String::from_utf8_lossy(f)).collect();
                    format!(
                        "{line}: {} <{}>",
                        fields.join("|"),
                        String::from_utf8_lossy(raw)
                    )
                }
                // What is kept of a long row depends on the reads: 12 bytes.
                Row::TooLong { line, raw } => {
                    format!(
                        "{line}: too long <{}>",
                        String::from_utf8_lossy(&raw[..12.min(raw.len())])
                    )
                }
                Row::TooManyFields { line, count, .. } => format!("{line}: {count} fields"),
            });
        }
        got
    }

    fn count(text: &str, max: usize) -> usize {
        let mut rows = CsvRows::new(max, false);
        let mut input = io::BufReader::with_capacity(5, text.as_bytes());
        let mut n = 0;
        while rows.next(&mut input, usize::MAX).unwrap().is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn rows_are_split_as_the_csv_crate_splits_them() {
        let text = "a,b\r\n1,\"x, \"\"y\"\"\nz\"\n\n\n2,\r3,4";
        assert_eq!(
            rows(text, 100, 10),
            [
                "1: a|b <a,b>",
                "2: 1|x, \"y\"\nz <1,\"x, \"\"y\"\"\nz\">",
                "6: 2| <2,>",
                "6: 3|4 <3,4>",
            ]
        );
        assert_eq!(count(text, 100), 4);
    }

    #[test]
    fn a_row_past_the_limit_is_reported_and_the_next_row_read() {
        let long = "y".repeat(30);
        let text = format!("a,b\n1,{long}\n2,ok\n3,\"{long}\nstill the field\"\n4,x\n");
        assert_eq!(
            rows(&text, 10, 2),
            [
                "1: a|b <a,b>".to_string(),
                format!("2: too long <1,{}>", &long[..10]),
                "3: 2|ok <2,ok>".to_string(),
                format!("4: too long <3,\"{}>", &long[..9]),
                "6: 4|x <4,x>".to_string(),
            ]
        );
        assert_eq!(count(&text, 10), 5);
        // Counting keeps nothing, however long the rows.
        let text = format!(
            "a\n{}\n\"{}\"\n{}",
            "z".repeat(100_000),
            "q\n".repeat(50_000),
            "e".repeat(70_000)
        );
        assert_eq!(count(&text, 10), 4);
        // Exactly at the limit, with either line ending, is fine.
        assert_eq!(
            rows("0123456789\r\nabc", 10, 2),
            ["1: 0123456789 <0123456789>", "2: abc <abc>"]
        );
        assert_eq!(rows("0123456789X", 10, 2), ["1: too long <0123456789X>"]);
    }

    #[test]
    fn fields_past_the_expected_count_are_counted_not_kept() {
        let text = format!("a\n{}\nb\n", ",".repeat(1000));
        assert_eq!(
            rows(&text, 10_000, 1),
            ["1: a <a>", "2: 1001 fields", "3: b <b>"]
        );
    }
}
