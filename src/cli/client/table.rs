//! Human output: left-aligned columns under a header, two spaces apart.

/// Renders `rows` (the first one is the header) as aligned columns; the
/// last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A cell for an optional number: the number, or "-".
pub fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["ID".to_string(), "ROLE".to_string(), "NOTE".to_string()],
            vec!["1".to_string(), "leader".to_string(), "".to_string()],
            vec!["22".to_string(), "-".to_string(), "x y".to_string()],
        ];
        assert_eq!(table(&rows), "ID  ROLE    NOTE\n1   leader\n22  -       x y\n");
    }
}
