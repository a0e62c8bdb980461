//! The item inventory: the IPIP-NEO-300 item key (items, keying, facets, domains).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::table::{Cells, read_string_table};

/// A Big Five domain. Ordered as the reports print them: A, C, E, N, O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Domain {
    /// Agreeableness.
    A,
    /// Conscientiousness.
    C,
    /// Extraversion.
    E,
    /// Neuroticism.
    N,
    /// Openness to experience.
    O,
}

impl Domain {
    /// All five domains, in report order.
    pub const ALL: [Domain; 5] = [Domain::A, Domain::C, Domain::E, Domain::N, Domain::O];

    /// The domain's letter.
    pub fn letter(self) -> char {
        match self {
            Domain::A => 'A',
            Domain::C => 'C',
            Domain::E => 'E',
            Domain::N => 'N',
            Domain::O => 'O',
        }
    }

    /// The domain's name.
    pub fn name(self) -> &'static str {
        match self {
            Domain::A => "Agreeableness",
            Domain::C => "Conscientiousness",
            Domain::E => "Extraversion",
            Domain::N => "Neuroticism",
            Domain::O => "Openness",
        }
    }

    /// Parses a domain letter (`N`, `E`, `O`, `A` or `C`, either case).
    pub fn from_letter(c: char) -> Option<Domain> {
        match c.to_ascii_uppercase() {
            'A' => Some(Domain::A),
            'C' => Some(Domain::C),
            'E' => Some(Domain::E),
            'N' => Some(Domain::N),
            'O' => Some(Domain::O),
            _ => None,
        }
    }

    /// Position in [`Domain::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// One value per domain, indexed by [`Domain`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PerDomain<T>(pub [T; 5]);

impl<T> PerDomain<T> {
    /// Builds the map by calling `f` for each domain in report order.
    pub fn from_fn(mut f: impl FnMut(Domain) -> T) -> Self {
        PerDomain(Domain::ALL.map(&mut f))
    }

    /// Iterates over `(domain, value)` in report order.
    pub fn iter(&self) -> impl Iterator<Item = (Domain, &T)> {
        Domain::ALL.into_iter().zip(self.0.iter())
    }

    /// Applies `f` to every value.
    pub fn map<U>(&self, mut f: impl FnMut(Domain, &T) -> U) -> PerDomain<U> {
        PerDomain::from_fn(|d| f(d, &self.0[d.index()]))
    }
}

impl<T> std::ops::Index<Domain> for PerDomain<T> {
    type Output = T;
    fn index(&self, d: Domain) -> &T {
        &self.0[d.index()]
    }
}

impl<T> std::ops::IndexMut<Domain> for PerDomain<T> {
    fn index_mut(&mut self, d: Domain) -> &mut T {
        &mut self.0[d.index()]
    }
}

/// The keying of an item: `+` items agree with their trait, `-` items are reverse-keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sign {
    /// Positively keyed.
    Plus,
    /// Reverse-keyed.
    Minus,
}

impl Sign {
    /// `'+'` or `'-'`.
    pub fn symbol(self) -> char {
        match self {
            Sign::Plus => '+',
            Sign::Minus => '-',
        }
    }
}

/// A facet: a domain and its facet number (1..=6), e.g. `N1` (Anxiety).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Facet {
    /// The domain the facet belongs to.
    pub domain: Domain,
    /// The facet number, 1..=6.
    pub number: u8,
}

impl Facet {
    /// Parses a facet code such as `N1` or `a6`.
    pub fn parse(code: &str) -> Option<Facet> {
        let mut chars = code.chars();
        let domain = Domain::from_letter(chars.next()?)?;
        let number: u8 = chars.as_str().parse().ok()?;
        (1..=6).contains(&number).then_some(Facet { domain, number })
    }
}

impl fmt::Display for Facet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.domain, self.number)
    }
}

/// One questionnaire item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Item number 1..=N: the `iN` column of a subject record.
    pub number: u16,
    /// Position in the 120-item short form, if the item is part of it.
    pub short: Option<u16>,
    /// Keying.
    pub sign: Sign,
    /// Facet (and through it the domain).
    pub facet: Facet,
    /// Facet name, e.g. "Anxiety".
    pub facet_name: String,
    /// Statement text, e.g. "Worry about things.".
    pub text: String,
}

impl Item {
    /// The item's domain.
    pub fn domain(&self) -> Domain {
        self.facet.domain
    }

    /// The record column that holds this item's answers (`i1`, `i2`, ...).
    pub fn column(&self) -> String {
        format!("i{}", self.number)
    }
}

/// The item inventory, items numbered 1..=N without gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    items: Vec<Item>,
}

/// The item key's columns, in the order the release uses.
const KEY_COLUMNS: [&str; 6] = ["Full#", "Short#", "Sign", "Key", "Facet", "Item"];

impl Inventory {
    /// Builds an inventory from items, checking that the numbers run 1..=N without gaps.
    pub fn new(items: Vec<Item>) -> Result<Self> {
        Self::from_items(PathBuf::from("<in memory>"), items)
    }

    fn from_items(path: PathBuf, mut items: Vec<Item>) -> Result<Self> {
        if items.is_empty() {
            return Err(Error::Empty { path });
        }
        items.sort_by_key(|i| i.number);
        for (pos, item) in items.iter().enumerate() {
            let expected = pos + 1;
            if usize::from(item.number) != expected {
                let message = if pos > 0 && items[pos - 1].number == item.number {
                    format!("item number {} appears twice", item.number)
                } else {
                    format!("item numbers must run 1..={} without gaps; item {expected} is missing", items.len())
                };
                return Err(Error::Inventory { path, message });
            }
        }
        let mut shorts: Vec<u16> = items.iter().filter_map(|i| i.short).collect();
        shorts.sort_unstable();
        if let Some(w) = shorts.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Inventory { path, message: format!("short-form position {} appears twice", w[0]) });
        }
        Ok(Inventory { items })
    }

    /// Loads the item key from a folder: `IPIP-NEO-ItemKey.csv` if present, else `.xls`.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let csv = dir.join("IPIP-NEO-ItemKey.csv");
        if csv.exists() {
            return Self::load(csv);
        }
        Self::load(dir.join("IPIP-NEO-ItemKey.xls"))
    }

    /// Loads the item key from a `.csv` or `.xls`/`.xlsx` file (chosen by extension).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let table = match ext.as_str() {
            "csv" => read_string_table(path)?,
            "xls" | "xlsx" => crate::table::read_excel_table(path)?,
            _ => {
                return Err(Error::UnsupportedFormat { path: path.to_owned(), expected: ".csv, .xls, .xlsx" });
            }
        };
        Self::from_table(path, &table)
    }

    fn from_table(path: &Path, table: &Cells) -> Result<Self> {
        let mut idx = [0usize; 6];
        for (slot, name) in idx.iter_mut().zip(KEY_COLUMNS) {
            *slot = table
                .header
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| Error::MissingColumn { path: path.to_owned(), column: name.to_owned() })?;
        }
        if table.rows.is_empty() {
            return Err(Error::Empty { path: path.to_owned() });
        }
        let mut items = Vec::with_capacity(table.rows.len());
        for (r, row) in table.rows.iter().enumerate() {
            let row_no = r + 1;
            let cell = |k: usize| row.get(idx[k]).map(|s| s.trim()).unwrap_or("");
            let bad = |k: usize, message: &str| Error::ItemKey {
                path: path.to_owned(),
                row: row_no,
                column: KEY_COLUMNS[k],
                value: cell(k).to_owned(),
                message: message.to_owned(),
            };
            let number: u16 = cell(0)
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(0, "expected an item number >= 1"))?;
            let short = match cell(1) {
                "" => None,
                s => Some(s.parse::<u16>().ok().filter(|n| *n >= 1).ok_or_else(|| bad(1, "expected a short-form position >= 1 or an empty cell"))?),
            };
            let key = Facet::parse(cell(3)).ok_or_else(|| bad(3, "expected a facet code: a domain letter N, E, O, A or C and a facet number 1..6"))?;
            let sign_cell = cell(2);
            let sign = match sign_cell.chars().next() {
                Some('+') => Sign::Plus,
                Some('-') => Sign::Minus,
                _ => return Err(bad(2, "expected `+` or `-` followed by the facet code")),
            };
            match Facet::parse(&sign_cell[1..]) {
                Some(f) if f == key => {}
                Some(_) => return Err(bad(2, &format!("the facet after the sign does not match `Key` ({key})"))),
                None => return Err(bad(2, "expected `+` or `-` followed by a facet code with a domain letter N, E, O, A or C")),
            }
            let text = cell(5);
            if text.is_empty() {
                return Err(bad(5, "the item text is empty"));
            }
            items.push(Item {
                number,
                short,
                sign,
                facet: key,
                facet_name: cell(4).to_owned(),
                text: text.to_owned(),
            });
        }
        Self::from_items(path.to_owned(), items)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the inventory has no items (never true for a loaded one).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// All items, by number.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The item with this number, if any.
    pub fn item(&self, number: u16) -> Option<&Item> {
        self.items.get(usize::from(number).checked_sub(1)?)
    }

    /// The short form: items with a short-form position, in that order.
    pub fn short_form(&self) -> Vec<u16> {
        let mut short: Vec<&Item> = self.items.iter().filter(|i| i.short.is_some()).collect();
        short.sort_by_key(|i| i.short);
        short.into_iter().map(|i| i.number).collect()
    }

    /// A synthetic 300-item inventory in the IPIP-NEO layout (5 domains × 6 facets × 10
    /// items, 4 per facet in the short form, keying alternating), for tests that must not
    /// depend on the real item key.
    pub fn synthetic() -> Self {
        let mut items = Vec::with_capacity(300);
        let mut short = 0u16;
        // Items cycle through the 30 facets like the real key does (N1, E1, O1, A1, C1, N2, ...).
        let order = [Domain::N, Domain::E, Domain::O, Domain::A, Domain::C];
        for n in 0..300u16 {
            let facet_pos = n % 30;
            let round = n / 30; // 0..10: the item's index within its facet
            let domain = order[usize::from(facet_pos % 5)];
            let number = (facet_pos / 5) as u8 + 1;
            let in_short = round < 4;
            items.push(Item {
                number: n + 1,
                short: in_short.then(|| {
                    short += 1;
                    short
                }),
                sign: if (round + facet_pos) % 2 == 0 { Sign::Plus } else { Sign::Minus },
                facet: Facet { domain, number },
                facet_name: format!("Facet {domain}{number}"),
                text: format!("Synthetic statement {} about {domain}{number}.", n + 1),
            });
        }
        Inventory { items }
    }
}
