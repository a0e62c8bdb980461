//! The README's published tables are what their committed result folders render.

use std::path::{Path, PathBuf};

fn readme() -> (PathBuf, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    (root, text)
}

#[test]
fn every_published_table_in_the_readme_is_what_its_folder_renders() {
    let (root, text) = readme();
    let doc = root.join("README.md");
    let blocks = eval::published::blocks(&text, &doc).unwrap();
    assert!(blocks.len() >= 2, "the README quotes its results through published blocks; found {}", blocks.len());
    for b in &blocks {
        assert!(b.folder.starts_with("results/published/"), "line {}: {} is not a published folder", b.line, b.folder);
    }
    let stale = eval::published::check(&text, &root, &doc).unwrap();
    assert!(stale.is_empty(), "README tables differ from their folders (run `cargo xtask readme`): {stale:?}");
    assert_eq!(eval::published::refresh(&text, &root, &doc).unwrap(), text);
}

#[test]
fn a_hand_edited_cell_is_caught() {
    let (root, text) = readme();
    let doc = root.join("README.md");
    let first = eval::published::blocks(&text, &doc).unwrap().into_iter().find(|b| b.content.contains("\n|---")).expect("a block with a table");
    // Change the first digit of the block's first table row (below the header) to another digit.
    let block_at = text.match_indices(&first.content).next().unwrap().0;
    let rule_at = first.content.find("\n|---").unwrap();
    let table_at = block_at + rule_at + 1 + first.content[rule_at + 1..].find("\n|").unwrap();
    let digit_at = table_at + text[table_at..].find(|c: char| c.is_ascii_digit()).unwrap();
    let old = text.as_bytes()[digit_at];
    let mut edited = text.clone().into_bytes();
    edited[digit_at] = if old == b'9' { b'8' } else { old + 1 };
    let edited = String::from_utf8(edited).unwrap();
    let stale = eval::published::check(&edited, &root, &doc).unwrap();
    assert_eq!(stale, vec![format!("line {}: {} {}", first.line, first.folder, first.table.name())]);
}

#[test]
fn a_block_without_its_end_or_with_an_unknown_table_is_refused_by_line() {
    let doc = Path::new("DOC.md");
    let e = eval::published::blocks("x\n<!-- published: results/published/a methods -->\n| a |\n", doc).unwrap_err().to_string();
    assert!(e.contains("DOC.md") && e.contains("line 2") && e.contains("not closed"), "{e}");
    let e = eval::published::blocks("<!-- published: results/published/a colours -->\n<!-- /published -->\n", doc).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("unknown table `colours`"), "{e}");
}
