//! `--chmod` modes as BuildKit reads them: an octal number, or a symbolic mode parsed and
//! applied as tonistiigi/dchapes-mode does (a port of BSD's `setmode(3)`, umask 0), so
//! `go=u`, `a=rX`, `u+x-w` and `g=o,o=` give the modes BuildKit gives.

/// Why a `--chmod` value is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    Octal(String),
    #[error("{0:?} is neither an octal mode (0755) nor a symbolic one (u+x,go-w)")]
    Symbolic(String),
}

const IS_UID: u32 = 0o4000;
const IS_GID: u32 = 0o2000;
const IS_TXT: u32 = 0o1000;
const RWXU: u32 = 0o700;
const RWXG: u32 = 0o070;
const RWXO: u32 = 0o007;
const STANDARD: u32 = IS_UID | IS_GID | RWXU | RWXG | RWXO;
const R_ALL: u32 = 0o444;
const W_ALL: u32 = 0o222;
const X_ALL: u32 = 0o111;

const CLEAR: u8 = 1;
const SET: u8 = 2;
const G_BITS: u8 = 4;
const O_BITS: u8 = 8;
const U_BITS: u8 = 16;

/// One step of a parsed mode: `+`, `-` and `X` with their bits; `u`, `g`, `o` copy that
/// class's bits to the classes in `cmd2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BitCmd {
    cmd: u8,
    cmd2: u8,
    bits: u32,
}

/// A parsed `--chmod`: octal (`0755`) or symbolic, applied to each copied entry's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mode {
    cmds: Vec<BitCmd>,
    octal: Option<u32>,
}

impl Mode {
    /// Parses a `--chmod` value as BuildKit's dispatchCopy does: a number in base 8 up to
    /// 07777, else a symbolic mode; something that starts with a digit is reported as a bad
    /// octal mode.
    pub fn parse(s: &str) -> Result<Mode, ChmodError> {
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return match u32::from_str_radix(s, 8) {
                Ok(v) if v <= 0o7777 => Ok(Mode {
                    cmds: Vec::new(),
                    octal: Some(v),
                }),
                _ => Err(ChmodError::Octal(s.to_owned())),
            };
        }
        let bad = || ChmodError::Symbolic(s.to_owned());
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(bad());
        }
        let mut m = Mode {
            cmds: Vec::new(),
            octal: None,
        };
        let mask = !0u32;
        let mut i = 0;
        let mut equal_op_done = false;
        loop {
            let mut who = 0u32;
            loop {
                match b.get(i) {
                    None => return Err(bad()),
                    Some(b'a') => who |= STANDARD,
                    Some(b'u') => who |= IS_UID | RWXU,
                    Some(b'g') => who |= IS_GID | RWXG,
                    Some(b'o') => who |= RWXO,
                    Some(_) => break,
                }
                i += 1;
            }
            // `getop` in setmode: several operators may follow one `who`.
            loop {
                let op = b[i];
                i += 1;
                match op {
                    b'+' | b'-' => {}
                    b'=' => equal_op_done = false,
                    _ => return Err(bad()),
                }
                who &= !IS_TXT;
                let mut perm = 0u32;
                let mut perm_x = 0u32;
                loop {
                    let c = b.get(i).copied().unwrap_or(0);
                    match c {
                        b'r' => perm |= R_ALL,
                        b's' => {
                            if who == 0 || who & !RWXO != 0 {
                                perm |= IS_UID | IS_GID;
                            }
                        }
                        b't' => {
                            if who == 0 || who & !RWXO != 0 {
                                who |= IS_TXT;
                                perm |= IS_TXT;
                            }
                        }
                        b'w' => perm |= W_ALL,
                        b'X' => {
                            if op != b'-' {
                                perm_x = X_ALL;
                            } else {
                                perm |= X_ALL;
                            }
                        }
                        b'x' => perm |= X_ALL,
                        b'u' | b'g' | b'o' => {
                            if perm != 0 {
                                m.add(op, who, perm, mask);
                                perm = 0;
                            }
                            if op == b'=' {
                                equal_op_done = true;
                            }
                            if perm_x != 0 {
                                m.add(b'X', who, perm_x, mask);
                                perm_x = 0;
                            }
                            m.add(c, who, u32::from(op), mask);
                        }
                        _ => {
                            if perm != 0 || op == b'=' && !equal_op_done {
                                if op == b'=' {
                                    equal_op_done = true;
                                }
                                m.add(op, who, perm, mask);
                            }
                            if perm_x != 0 {
                                m.add(b'X', who, perm_x, mask);
                            }
                            break;
                        }
                    }
                    i += 1;
                }
                if i >= b.len() || b[i] == b',' {
                    break;
                }
            }
            if i >= b.len() {
                break;
            }
            // Past the `,`.
            i += 1;
        }
        m.compress();
        Ok(m)
    }

    /// The octal mode, when the value was one (BuildKit also makes the missing destination
    /// directories with it).
    pub fn octal(&self) -> Option<u32> {
        self.octal
    }

    /// The mode an entry with `mode` (permission bits, setuid, setgid, sticky) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        if let Some(v) = self.octal {
            return v;
        }
        let old = mode & 0o7777;
        let mut new = old;
        for c in &self.cmds {
            match c.cmd {
                b'u' => new = common(new, c, (new & RWXU) >> 6),
                b'g' => new = common(new, c, (new & RWXG) >> 3),
                b'o' => new = common(new, c, new & RWXO),
                b'+' => new |= c.bits,
                b'-' => new &= !c.bits,
                b'X' if old & X_ALL != 0 || is_dir => new |= c.bits,
                _ => {}
            }
        }
        new & 0o7777
    }

    fn add(&mut self, op: u8, who: u32, oparg: u32, mask: u32) {
        let mut c = BitCmd {
            cmd: op,
            cmd2: 0,
            bits: 0,
        };
        match op {
            b'=' | b'+' | b'-' | b'X' => {
                let op = if op == b'=' {
                    self.cmds.push(BitCmd {
                        cmd: b'-',
                        cmd2: 0,
                        bits: if who != 0 { who } else { STANDARD },
                    });
                    b'+'
                } else {
                    op
                };
                c.cmd = op;
                c.bits = if who != 0 { who & oparg } else { mask & oparg };
            }
            _ => {
                if who != 0 {
                    if who & 0o400 != 0 {
                        c.cmd2 |= U_BITS;
                    }
                    if who & 0o040 != 0 {
                        c.cmd2 |= G_BITS;
                    }
                    if who & 0o004 != 0 {
                        c.cmd2 |= O_BITS;
                    }
                    c.bits = !0;
                } else {
                    c.cmd2 = U_BITS | G_BITS | O_BITS;
                    c.bits = mask;
                }
                c.cmd2 |= match oparg as u8 {
                    b'+' => SET,
                    b'-' => CLEAR,
                    _ => SET | CLEAR,
                };
            }
        }
        self.cmds.push(c);
    }

    /// Merges runs of `+`, `-` and `X` into at most one of each, as setmode's compress_mode.
    fn compress(&mut self) {
        let cmds = std::mem::take(&mut self.cmds);
        let mut i = 0;
        while i < cmds.len() {
            if !b"+-X".contains(&cmds[i].cmd) {
                self.cmds.push(cmds[i]);
                i += 1;
                continue;
            }
            let (mut set, mut clr, mut x) = (0u32, 0u32, 0u32);
            while let Some(c) = cmds.get(i).filter(|c| b"+-X".contains(&c.cmd)) {
                match c.cmd {
                    b'-' => {
                        clr |= c.bits;
                        set &= !c.bits;
                        x &= !c.bits;
                    }
                    b'+' => {
                        set |= c.bits;
                        clr &= !c.bits;
                        x &= !c.bits;
                    }
                    _ => x |= c.bits & !set,
                }
                i += 1;
            }
            for (cmd, bits) in [(b'-', clr), (b'+', set), (b'X', x)] {
                if bits != 0 {
                    self.cmds.push(BitCmd { cmd, cmd2: 0, bits });
                }
            }
        }
    }
}

/// A `u`, `g` or `o` step: `value` (that class's three bits) cleared from and/or set on the
/// classes the step names.
fn common(mut new: u32, c: &BitCmd, value: u32) -> u32 {
    if c.cmd2 & CLEAR != 0 {
        let clr = if c.cmd2 & SET != 0 { RWXO } else { value };
        if c.cmd2 & U_BITS != 0 {
            new &= !((clr << 6) & c.bits);
        }
        if c.cmd2 & G_BITS != 0 {
            new &= !((clr << 3) & c.bits);
        }
        if c.cmd2 & O_BITS != 0 {
            new &= !(clr & c.bits);
        }
    }
    if c.cmd2 & SET != 0 {
        if c.cmd2 & U_BITS != 0 {
            new |= (value << 6) & c.bits;
        }
        if c.cmd2 & G_BITS != 0 {
            new |= (value << 3) & c.bits;
        }
        if c.cmd2 & O_BITS != 0 {
            new |= value & c.bits;
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_dchapes_mode_gives_them() {
        // (spec, mode, is_dir, want), worked through BSD setmode by hand.
        let cases: &[(&str, u32, bool, u32)] = &[
            ("755", 0o600, false, 0o755),
            ("0", 0o644, false, 0),
            ("07777", 0, false, 0o7777),
            ("go=u", 0o640, false, 0o666),
            ("u+x", 0o640, false, 0o740),
            ("a=rX", 0o640, false, 0o444),
            ("a=rX", 0o744, false, 0o555),
            ("a=rX", 0o700, true, 0o555),
            ("u=rwx,g=rx,o=", 0o640, false, 0o750),
            ("o+w-r,g-r", 0o640, false, 0o602),
            ("g=o,u-w", 0o640, false, 0o400),
            ("+x", 0o644, false, 0o755),
            ("=r", 0o777, false, 0o444),
            ("u+s", 0o755, false, 0o4755),
            ("o+t", 0o755, true, 0o755),
            ("+t", 0o755, true, 0o1755),
            ("g+s,o-rwx", 0o775, true, 0o2770),
            ("u-x+X", 0o644, false, 0o644),
            ("ug+rw,o-w", 0o604, false, 0o664),
        ];
        for &(spec, mode, is_dir, want) in cases {
            let got = Mode::parse(spec).unwrap().apply(mode, is_dir);
            assert_eq!(got, want, "{spec} on {mode:o}: {got:o}");
        }
    }

    #[test]
    fn bad_modes_are_refused() {
        for spec in [
            "", "64a", "10000", "8", "u", "u+q", "z+x", "u+x,", "+x,,g-w", "u+x g",
        ] {
            assert!(Mode::parse(spec).is_err(), "{spec:?}");
        }
        assert!(matches!(Mode::parse("64a"), Err(ChmodError::Octal(_))));
    }
}
