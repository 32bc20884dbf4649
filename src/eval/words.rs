//! A word tokenizer close to NLTK's `word_tokenize` (spec §10.2), for the fluency metric.
//!
//! NLTK splits the text into sentences with its Punkt model, then runs `NLTKWordTokenizer` (the
//! improved Penn Treebank tokenizer) on each sentence. This file re-implements the Treebank
//! rules one by one, in NLTK's order and with its left-to-right, non-overlapping matching:
//! starting quotes, punctuation, brackets, double dashes, ending quotes and contractions
//! (`n't`, `'s`, `'re`, `'ll`, `'ve`, `'m`, `'d`, `cannot`, `gonna`, `'tis` …).
//!
//! Known differences from NLTK:
//! - Sentence splitting is a heuristic, not Punkt: a sentence ends after `.`, `?` or `!` (a run
//!   of them, then any closing quotes or brackets) followed by whitespace, unless the word before
//!   a single `.` is a single letter (an initial) or one of [`ABBREVIATIONS`]. Punkt learned its
//!   abbreviations and uses orthographic statistics, so it splits differently in rare cases
//!   (an unlisted abbreviation, a sentence ending in an initial). The only effect on the tokens
//!   is whether a sentence-final `.` is split off its word.
//! - `\d` is taken as [`char::is_numeric`] and `\w` as alphanumeric or `_` (Python's `re` uses
//!   the Unicode decimal-digit class for `\d`; the two differ only for characters such as `½`).
//! - Parentheses are kept as they are (NLTK's default `convert_parentheses = False`).

/// Abbreviations after which a `.` does not end a sentence (lowercase, without the final `.`).
pub const ABBREVIATIONS: [&str; 32] = [
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "u.s", "u.k",
    "inc", "ltd", "co", "corp", "no", "gen", "col", "lt", "sgt", "capt", "gov", "sen", "rep",
    "jan", "feb", "aug", "sept", "oct",
];

/// Splits `text` into words and punctuation as `nltk.word_tokenize` does (see the module docs
/// for the differences).
pub fn word_tokenize(text: &str) -> Vec<String> {
    sentences(text)
        .into_iter()
        .flat_map(|s| treebank(s.trim()))
        .collect()
}

/// Splits `text` into sentences (the Punkt stand-in described in the module docs).
pub fn sentences(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut start = 0;
    let mut i = 0;
    while i < c.len() {
        if matches!(c[i], '.' | '?' | '!') {
            let mut j = i;
            while j < c.len() && matches!(c[j], '.' | '?' | '!') {
                j += 1;
            }
            let single_period = j == i + 1 && c[i] == '.';
            while j < c.len() && is_closer(c[j]) {
                j += 1;
            }
            let followed_by_space = j < c.len() && c[j].is_whitespace();
            if followed_by_space && !(single_period && is_abbreviation(&c[start..i])) {
                out.push(c[start..j].iter().collect::<String>());
                start = j;
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    if start < c.len() {
        out.push(c[start..].iter().collect());
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

/// Closing quotes and brackets that may follow a sentence's final punctuation.
fn is_closer(c: char) -> bool {
    matches!(c, ']' | ')' | '}' | '>' | '"' | '\'' | '”' | '’' | '»')
}

/// Whether the word that ends `before` (the text before a `.`) is an initial or an abbreviation.
fn is_abbreviation(before: &[char]) -> bool {
    let word: String = before
        .iter()
        .rev()
        .take_while(|c| !c.is_whitespace())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let word = word.trim_start_matches(['(', '[', '"', '\'', '`', '“', '‘']);
    let mut letters = word.chars();
    let initial = matches!((letters.next(), letters.next()), (Some(a), None) if a.is_alphabetic());
    initial || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

/// Python's `\w`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `NLTKWordTokenizer.tokenize` on one sentence.
pub fn treebank(sentence: &str) -> Vec<String> {
    let mut t: Vec<char> = sentence.chars().collect();
    // STARTING_QUOTES
    t = pad_each(&t, |c, i| match c[i] {
        '«' | '“' | '‘' | '„' => Some(1),
        '`' => Some(c[i..].iter().take_while(|&&x| x == '`').count()),
        _ => None,
    });
    if t.first() == Some(&'"') {
        t.splice(0..1, ['`', '`']);
    }
    t = pad_each(&t, |c, i| (c[i..].starts_with(&['`', '`'])).then_some(2));
    t = rewrite(&t, |c, i| {
        let opener = matches!(c[i], ' ' | '(' | '[' | '{' | '<');
        let quote = match c.get(i + 1) {
            Some('"') => 1,
            Some('\'') if c.get(i + 2) == Some(&'\'') => 2,
            _ => 0,
        };
        (opener && quote > 0).then(|| (1 + quote, format!("{} `` ", c[i])))
    });
    t = rewrite(&t, |c, i| {
        let ok = c[i] == '\''
            && c.get(i + 1).is_some_and(|&x| is_word(x))
            && !c.get(i + 2).is_some_and(|&x| is_word(x))
            && !matches!(c[i + 1].to_ascii_lowercase(), 'm' | 't' | 's' | 'd' | 'n');
        ok.then(|| (2, format!("' {}", c[i + 1])))
    });
    // PUNCTUATION
    t = final_period(&t, true);
    t = rewrite(&t, |c, i| {
        let ok = matches!(c[i], ':' | ',') && c.get(i + 1).is_some_and(|x| !x.is_numeric());
        ok.then(|| (2, format!(" {} {}", c[i], c[i + 1])))
    });
    if matches!(t.last(), Some(':' | ',')) {
        let p = t.pop().expect("non-empty");
        t.extend([' ', p, ' ']);
    }
    t = pad_each(&t, |c, i| {
        let n = c[i..].iter().take_while(|&&x| x == '.').count();
        (n >= 2).then_some(n)
    });
    t = pad_each(&t, |c, i| {
        matches!(c[i], ';' | '@' | '#' | '$' | '%' | '&').then_some(1)
    });
    t = final_period(&t, false);
    t = pad_each(&t, |c, i| matches!(c[i], '?' | '!').then_some(1));
    t = rewrite(&t, |c, i| {
        let ok = c[i] != '\'' && c.get(i + 1) == Some(&'\'') && c.get(i + 2) == Some(&' ');
        ok.then(|| (3, format!("{} ' ", c[i])))
    });
    t = pad_each(&t, |c, i| (c[i] == '*').then_some(1));
    // PARENS_BRACKETS, DOUBLE_DASHES
    t = pad_each(&t, |c, i| {
        matches!(c[i], ']' | '[' | '(' | ')' | '{' | '}' | '<' | '>').then_some(1)
    });
    t = pad_each(&t, |c, i| c[i..].starts_with(&['-', '-']).then_some(2));
    t.insert(0, ' ');
    t.push(' ');
    // ENDING_QUOTES
    t = pad_each(&t, |c, i| matches!(c[i], '»' | '”' | '’').then_some(1));
    t = rewrite(&t, |c, i| {
        c[i..]
            .starts_with(&['\'', '\''])
            .then(|| (2, " '' ".to_string()))
    });
    t = rewrite(&t, |c, i| (c[i] == '"').then(|| (1, " '' ".to_string())));
    t = rewrite(&t, |c, i| {
        if matches!(c[i], '\'' | ' ') || c.get(i + 1) != Some(&'\'') {
            return None;
        }
        let clitic = match c.get(i + 2) {
            Some(&x) if "sSmMdD".contains(x) && c.get(i + 3) == Some(&' ') => 2,
            Some(' ') => 1,
            _ => return None,
        };
        let g: String = c[i + 1..i + 1 + clitic].iter().collect();
        Some((2 + clitic, format!("{} {g} ", c[i])))
    });
    t = rewrite(&t, |c, i| {
        if matches!(c[i], '\'' | ' ') {
            return None;
        }
        const CLITICS: [&str; 8] = ["'ll", "'LL", "'re", "'RE", "'ve", "'VE", "n't", "N'T"];
        let rest: String = c[i + 1..(i + 5).min(c.len())].iter().collect();
        CLITICS
            .iter()
            .find(|k| rest.starts_with(&format!("{k} ")))
            .map(|k| (5, format!("{} {k} ", c[i])))
    });
    // CONTRACTIONS2, CONTRACTIONS3
    let mut s: String = t.iter().collect();
    for (a, b) in [
        ("can", "not"),
        ("d", "'ye"),
        ("gim", "me"),
        ("gon", "na"),
        ("got", "ta"),
        ("lem", "me"),
        ("more", "'n"),
        ("wan", "na"),
    ] {
        s = split_word(&s, a, b, b == "na" && a == "wan");
    }
    for (a, b) in [("'t", "is"), ("'t", "was")] {
        s = split_after_space(&s, a, b);
    }
    s.split_whitespace().map(str::to_string).collect()
}

/// Replaces each match of length `n = at(c, i)` (scanning left to right, without overlaps) by
/// itself with a space on both sides.
fn pad_each(c: &[char], at: impl Fn(&[char], usize) -> Option<usize>) -> Vec<char> {
    rewrite(c, |c, i| {
        at(c, i).map(|n| (n, format!(" {} ", c[i..i + n].iter().collect::<String>())))
    })
}

/// Scans left to right; where `at(c, i)` returns `(len, replacement)`, replaces `c[i..i+len]`
/// and continues after it (Python's `re.sub` without overlapping matches).
fn rewrite(c: &[char], at: impl Fn(&[char], usize) -> Option<(usize, String)>) -> Vec<char> {
    let mut out = Vec::with_capacity(c.len() + 8);
    let mut i = 0;
    while i < c.len() {
        match at(c, i) {
            Some((n, rep)) if n > 0 => {
                out.extend(rep.chars());
                i += n;
            }
            _ => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

/// `([^\.])(\.)([\]\)}>"\']*)\s*$` → `\1 \2 \3 ` (`spaced`) or `\1 \2\3 `.
fn final_period(c: &[char], spaced: bool) -> Vec<char> {
    let mut end = c.len();
    while end > 0 && c[end - 1].is_whitespace() {
        end -= 1;
    }
    let mut p = end;
    while p > 0 && matches!(c[p - 1], ']' | ')' | '}' | '>' | '"' | '\'') {
        p -= 1;
    }
    // Closers may also be matched by `\s*`-free backtracking only as written; the period must
    // sit right before them and a non-period right before it.
    if p < 2 || c[p - 1] != '.' || c[p - 2] == '.' {
        return c.to_vec();
    }
    let mut out: Vec<char> = c[..p - 1].to_vec();
    out.extend([' ', '.']);
    if spaced {
        out.push(' ');
    }
    out.extend(&c[p..end]);
    out.push(' ');
    out
}

/// `(?i)\b(a)(b)\b` → ` \1 \2 ` (with `(?=\s)` instead of the final `\b` when `lookahead_space`).
fn split_word(s: &str, a: &str, b: &str, lookahead_space: bool) -> String {
    let c: Vec<char> = s.chars().collect();
    let word: Vec<char> = format!("{a}{b}").chars().collect();
    let n = word.len();
    let na = a.chars().count();
    let out = rewrite(&c, |c, i| {
        let starts = i == 0 || !is_word(c[i - 1]) || !is_word(c[i]);
        let matched = i + n <= c.len()
            && c[i..i + n]
                .iter()
                .zip(&word)
                .all(|(x, y)| x.to_lowercase().eq(y.to_lowercase()));
        if !(starts && matched) {
            return None;
        }
        let ends = match c.get(i + n) {
            None => !lookahead_space && is_word(c[i + n - 1]),
            Some(&x) if lookahead_space => x.is_whitespace(),
            Some(&x) => is_word(x) != is_word(c[i + n - 1]),
        };
        let left: String = c[i..i + na].iter().collect();
        let right: String = c[i + na..i + n].iter().collect();
        ends.then(|| (n, format!(" {left} {right} ")))
    });
    out.into_iter().collect()
}

/// `(?i) ('t)(b)\b` → ` \1 \2 `.
fn split_after_space(s: &str, a: &str, b: &str) -> String {
    let lead = format!(" {a}");
    let word: Vec<char> = format!("{lead}{b}").chars().collect();
    let n = word.len();
    let c: Vec<char> = s.chars().collect();
    let out = rewrite(&c, |c, i| {
        let matched = i + n <= c.len()
            && c[i..i + n]
                .iter()
                .zip(&word)
                .all(|(x, y)| x.to_lowercase().eq(y.to_lowercase()));
        let ends = c.get(i + n).is_none_or(|&x| !is_word(x));
        (matched && ends).then(|| {
            let left: String = c[i + 1..i + 1 + a.chars().count()].iter().collect();
            let right: String = c[i + 1 + a.chars().count()..i + n].iter().collect();
            (n, format!(" {left} {right} "))
        })
    });
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    /// Outputs of NLTK 3.8 `word_tokenize` on the same strings.
    #[test]
    fn matches_nltk_on_tricky_strings() {
        let cases = [
            (
                "Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\nThanks.",
                "Good muffins cost $ 3.88 in New York . Please buy me two of them . Thanks .",
            ),
            (
                "They'll save and invest more.",
                "They 'll save and invest more .",
            ),
            ("I can't, won't, don't!", "I ca n't , wo n't , do n't !"),
            ("\"Hello,\" she said.", "`` Hello , '' she said ."),
            ("It's John's (big) dog...", "It 's John 's ( big ) dog ..."),
            ("I cannot go; gonna stay.", "I can not go ; gon na stay ."),
            (
                "Mr. Smith lives in the U.S. now.",
                "Mr. Smith lives in the U.S. now .",
            ),
            ("a--b 1,000 3:30 x: y", "a -- b 1,000 3:30 x : y"),
            ("the students' books", "the students ' books"),
            ("'Tis the season.", "'T is the season ."),
        ];
        for (text, want) in cases {
            assert_eq!(word_tokenize(text), toks(want), "{text:?}");
        }
    }

    #[test]
    fn sentence_splits() {
        assert_eq!(
            sentences("One. Two? Three! (Four.) Dr. Who. J. R. R. Tolkien wrote."),
            [
                "One.",
                " Two?",
                " Three!",
                " (Four.)",
                " Dr. Who.",
                " J. R. R. Tolkien wrote."
            ]
        );
        assert!(sentences("   ").is_empty());
    }

    #[test]
    fn empty_and_plain() {
        assert!(word_tokenize("").is_empty());
        assert_eq!(
            word_tokenize("plain words here"),
            ["plain", "words", "here"]
        );
    }
}
