#!/usr/bin/env bash
# Checks the code's shape: no module import cycle in any crate, no production file over 800 lines.
#
# Cycles: each .rs file under <crate>/src is a module (`a/mod.rs` and `a.rs` are `a`, `a/b.rs` is
# `a::b`, `lib.rs` and `main.rs` the crate root). A module uses another when its production code
# names it through a `crate::` or `super::` path (in `use` trees too); `super::` from a child is an
# edge to its parent. An intra-doc link in a doc comment ([`crate::x`]) counts as a use; other
# comments, string literals and `#[cfg(test)]` items are skipped, and so are test-only files
# (`tests.rs`, anything under a `tests/` folder inside src/). Cycles are looked for twice: between
# modules, and between top-level modules taken whole (`a/` is `a` with all below it, so `a::x`
# using `b` while `b` uses `a::y` is the cycle `a/ b/`). Each strongly connected group is reported
# with the edges that tie it together.
#
# Size: a production file is its lines before its first top-level `#[cfg(test)] mod` (or the whole
# file), for the crates that ship: parser, builder, layers, cli.
#
# Known offenders may be listed, exactly, in scripts/structure-allow.txt as `lines <path>` or
# `cycle <crate>: <modules, sorted>`; the check prints these lines ready to paste. An entry that
# no longer matches anything fails the check too, so the list only ever shrinks.
set -euo pipefail
cd "$(dirname "$0")/.."

allow=scripts/structure-allow.txt
max_lines=800
size_crates=(parser builder layers cli)
cycle_crates=(parser builder layers cli tests)

found=$(mktemp)
trap 'rm -f "$found"' EXIT

# --- file size -------------------------------------------------------------------------------
for crate in "${size_crates[@]}"; do
    find "$crate/src" -name '*.rs' -not -name tests.rs -not -path '*/tests/*' | sort |
        while read -r file; do
            n=$(awk '
                cfg && /^(pub(\([a-z]+\))? )?mod / { exit }
                { cfg = /^#\[cfg\(test\)\]/; n++ }
                END { print (cfg ? n - 1 : n) + 0 }' "$file")
            if [ "$n" -gt "$max_lines" ]; then
                echo "lines $file	($n production lines, at most $max_lines)" >>"$found"
            fi
        done
done

# --- module import cycles --------------------------------------------------------------------
files=()
for crate in "${cycle_crates[@]}"; do
    while read -r file; do files+=("$file"); done < <(
        find "$crate/src" -name '*.rs' -not -name tests.rs -not -path '*/tests/*' -not -path '*/bin/*' | sort
    )
done

awk '
# Module path of a file: crate/src/a/b.rs -> a::b; lib.rs, main.rs -> crate.
function module_of(path,   m) {
    m = path
    sub(/^[^\/]+\/src\//, "", m)
    sub(/\.rs$/, "", m)
    sub(/(^|\/)mod$/, "", m)
    if (m == "lib" || m == "main" || m == "") return "crate"
    gsub(/\//, "::", m)
    return m
}

# Strips comments and the contents of string and char literals from one line, carrying block
# comments and multi-line strings over to the next line through globals.
function clean(line,   out, i, n, c, c2, j, k, hashes, cl, rest, link) {
    out = ""
    n = length(line)
    i = 1
    while (i <= n) {
        c = substr(line, i, 1)
        if (in_block > 0) {
            c2 = substr(line, i, 2)
            if (c2 == "*/") { in_block--; i += 2; continue }
            if (c2 == "/*") { in_block++; i += 2; continue }
            i++; continue
        }
        if (in_str) {
            if (c == "\\") { i += 2; continue }
            if (c == "\"") { in_str = 0; out = out "\""; i++; continue }
            i++; continue
        }
        if (in_raw != "") {
            if (substr(line, i, length(in_raw)) == in_raw) {
                out = out "\""; i += length(in_raw); in_raw = ""; continue
            }
            i++; continue
        }
        c2 = substr(line, i, 2)
        if (c2 == "//") {
            # An intra-doc link in a doc comment ([`crate::x`]) makes rustdoc depend on that module
            # as surely as a `use`: kept as a path, the rest of the comment dropped.
            rest = substr(line, i)
            if (rest ~ /^\/\/[\/!]/) {
                while (match(rest, /\[`?(crate|super)(::[A-Za-z0-9_]+)+/)) {
                    link = substr(rest, RSTART + 1, RLENGTH - 1)
                    sub(/^`/, "", link)
                    out = out " " link " "
                    rest = substr(rest, RSTART + RLENGTH)
                }
            }
            break
        }
        if (c2 == "/*") { in_block = 1; i += 2; continue }
        if (c == "\"") { in_str = 1; out = out "\""; i++; continue }
        # Raw strings: r"..", r#".."#, br"..", not the tail of an identifier.
        if (c == "r" && substr(line, i + 1) ~ /^#*"/ && \
            (i == 1 || substr(line, i - 1, 1) !~ /[A-Za-z0-9_]/ || \
             (substr(line, i - 1, 1) == "b" && (i == 2 || substr(line, i - 2, 1) !~ /[A-Za-z0-9_]/)))) {
            j = i + 1; hashes = ""
            while (substr(line, j, 1) == "#") { hashes = hashes "#"; j++ }
            in_raw = "\"" hashes
            out = out "\""
            i = j + 1
            continue
        }
        if (c == "\x27") {
            # A char literal, or a lifetime / loop label (left as it is).
            if (substr(line, i + 1, 1) == "\\") {
                j = i + 2
                while (j <= n && substr(line, j, 1) != "\x27") j++
                out = out "\x27\x27"; i = j + 1; continue
            }
            cl = 0
            for (k = 2; k <= 5; k++) if (substr(line, i + k, 1) == "\x27") { cl = k; break }
            if (cl == 2 || (cl > 2 && substr(line, i + 1, 1) > "\x7f")) {
                out = out "\x27\x27"; i = i + cl + 1; continue
            }
        }
        out = out c
        i++
    }
    return out
}

function push_token(t) {
    ntok++
    tok[ntok] = t
}

# Records a reference from the current place to a path starting with crate or super.
function reference(path,   base, k, s) {
    if (path ~ /^crate(::|$)/) {
        base = "crate"
        sub(/^crate(::)?/, "", path)
    } else {
        base = inline_path()
        while (path ~ /^super(::|$)/) {
            if (base == "crate") return
            if (base ~ /::/) sub(/::[^:]+$/, "", base); else base = "crate"
            sub(/^super(::)?/, "", path)
        }
    }
    if (path != "") base = (base == "crate") ? path : base "::" path
    nref++
    ref_crate[nref] = crate
    ref_from[nref] = module
    ref_to[nref] = base
    ref_at[nref] = FILENAME ":" FNR
}

function inline_path(   p, d) {
    p = module
    for (d = 1; d <= nmods; d++) p = (p == "crate") ? mods[d] : p "::" mods[d]
    return p
}

# Expands a use tree (tokens joined, no spaces) into its paths and records those that start
# with crate or super.
function use_tree(prefix, s,   depth, i, c, part, start, inner) {
    # Split s at top-level commas.
    depth = 0; start = 1
    s = s ","
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "{") depth++
        else if (c == "}") depth--
        else if (c == "," && depth == 0) {
            part = substr(s, start, i - start)
            start = i + 1
            if (part == "") continue
            if (match(part, /\{/)) {
                inner = substr(part, RSTART + 1)
                sub(/\}$/, "", inner)
                use_tree(prefix substr(part, 1, RSTART - 1), inner)
            } else {
                sub(/ as .*/, "", part)
                part = prefix part
                sub(/::(self|\*)$/, "", part)
                if (part ~ /^(crate|super)(::|$)/) reference(part)
            }
        }
    }
}

# One token of production code.
function handle(t, prev,   p) {
    if (skip_item) {
        if (t == "{") { depth++; skip_opened = 1; return }
        if (t == "}") {
            depth--
            if (depth == skip_depth && skip_opened) skip_item = 0
            return
        }
        if (t == ";" && depth == skip_depth) skip_item = 0
        return
    }
    if (in_use) {
        if (t == ";") { in_use = 0; use_tree("", use_text); return }
        use_text = use_text (t == "as" ? " as " : t)
        return
    }
    if (attr_state > 0) {
        # Matching "#", "[", "cfg", "(", "test", ")", "]".
        if (t == attr_want[attr_state]) {
            attr_state++
            if (attr_state > 6) { attr_state = 0; skip_item = 1; skip_opened = 0; skip_depth = depth }
            return
        }
        attr_state = 0
    }
    if (t == "#") { attr_state = 1; return }
    if (t == "use") { in_use = 1; use_text = ""; return }
    if (t == "{") {
        depth++
        if (pending_mod != "") { nmods++; mods[nmods] = pending_mod; mod_depth[nmods] = depth; pending_mod = "" }
        return
    }
    if (t == "}") {
        if (nmods > 0 && mod_depth[nmods] == depth) nmods--
        depth--
        return
    }
    pending_mod = (prev == "mod" && t ~ /^[A-Za-z_]/) ? t : ""
    if (path_text != "") {
        if (t == "::" || (t ~ /^[A-Za-z_]/ && path_text ~ /::$/)) { path_text = path_text t; return }
        p = path_text; path_text = ""
        sub(/::$/, "", p)
        if (p ~ /::/) reference(p)
    }
    if ((t == "crate" || t == "super") && prev != "$") { path_text = t; return }
}

BEGIN {
    split("[ cfg ( test ) ]", words, " ")
    for (i = 1; i <= 6; i++) attr_want[i] = words[i]
}

FNR == 1 {
    crate = FILENAME; sub(/\/.*/, "", crate)
    module = module_of(FILENAME)
    known[crate, module] = 1
    in_block = 0; in_str = 0; in_raw = ""
    depth = 0; nmods = 0; skip_item = 0; in_use = 0; attr_state = 0
    pending_mod = ""; path_text = ""; prev_tok = ""
}

{
    line = clean($0)
    ntok = 0
    while (line != "") {
        if (match(line, /^[ \t]+/)) { line = substr(line, RLENGTH + 1); continue }
        if (match(line, /^[A-Za-z_][A-Za-z0-9_]*/) || match(line, /^::/) || match(line, /^[0-9]+/)) {
            push_token(substr(line, 1, RLENGTH)); line = substr(line, RLENGTH + 1); continue
        }
        push_token(substr(line, 1, 1)); line = substr(line, 2)
    }
    for (ti = 1; ti <= ntok; ti++) { handle(tok[ti], prev_tok); prev_tok = tok[ti] }
}

# Tarjan: every strongly connected component of more than one module is a cycle.
function strongconnect(v,   k, w) {
    index_of[v] = next_index; low[v] = next_index; next_index++
    nstack++; stack[nstack] = v; on_stack[v] = 1
    for (k = 1; k <= nout[v]; k++) {
        w = out[v, k]
        if (!(w in index_of)) {
            strongconnect(w)
            if (low[w] < low[v]) low[v] = low[w]
        } else if (on_stack[w] && index_of[w] < low[v]) {
            low[v] = index_of[w]
        }
    }
    if (low[v] == index_of[v]) {
        ncomp++; comp_size[ncomp] = 0
        do {
            w = stack[nstack]; nstack--; on_stack[w] = 0
            comp_of[w] = ncomp
            comp_size[ncomp]++; comp_member[ncomp, comp_size[ncomp]] = w
        } while (w != v)
    }
}

END {
    for (r = 1; r <= nref; r++) {
        c = ref_crate[r]; to = ref_to[r]
        # The module is the longest known prefix of the path; the rest names an item.
        while (!((c, to) in known) && to ~ /::/) sub(/::[^:]+$/, "", to)
        if (!((c, to) in known)) to = "crate"
        from = c ":" ref_from[r]; to = c ":" to
        if (from == to || ((from, to) in edge_at)) continue
        edge_at[from, to] = ref_at[r]
        if (ENVIRON["STRUCTURE_DEBUG"] != "") print "edge " from " -> " to "  (" ref_at[r] ")" > "/dev/stderr"
        nodes[from] = 1; nodes[to] = 1
        nout[from]++; out[from, nout[from]] = to
        # The same edge between top-level modules (a directory is one module with all below
        # it): `a/x.rs` using `b` while `b` uses `a/y.rs` is a cycle between a and b too.
        ta = ref_from[r]; tb = to; sub(/^[^:]*:/, "", tb)
        # Between two top-level modules the edge above says it already.
        if (ta !~ /::/ && tb !~ /::/) continue
        sub(/::.*/, "", ta); sub(/::.*/, "", tb)
        if (ta == tb || ta == "crate" || tb == "crate") continue
        ta = c ":" ta "/"; tb = c ":" tb "/"
        if ((ta, tb) in edge_at) continue
        edge_at[ta, tb] = ref_at[r]
        nodes[ta] = 1; nodes[tb] = 1
        nout[ta]++; out[ta, nout[ta]] = tb
    }
    next_index = 0
    for (v in nodes) if (!(v in index_of)) strongconnect(v)
    for (k = 1; k <= ncomp; k++) {
        if (comp_size[k] < 2) continue
        # Sort members for a stable allow-list key.
        n = comp_size[k]
        for (i = 1; i <= n; i++) s[i] = comp_member[k, i]
        for (i = 2; i <= n; i++) { x = s[i]; for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
        c = s[1]; sub(/:.*/, "", c)
        key = "cycle " c ":"
        for (i = 1; i <= n; i++) { m = s[i]; sub(/^[^:]*:/, "", m); key = key " " m }
        detail = ""
        for (i = 1; i <= n; i++) for (e = 1; e <= nout[s[i]]; e++) {
            w = out[s[i], e]
            if (comp_of[w] != k) continue
            a = s[i]; b = w; sub(/^[^:]*:/, "", a); sub(/^[^:]*:/, "", b)
            detail = detail "\n    " a " -> " b "  (" edge_at[s[i], w] ")"
        }
        print key detail
    }
}
' "${files[@]}" >>"$found"

# --- compare with the allow-list -------------------------------------------------------------
# Records in $found start at an unindented line, `<key>\t<why>`; indented lines are its details.
awk -v allow="$allow" -v max="$max_lines" '
    BEGIN {
        while ((getline entry < allow) > 0)
            if (entry !~ /^[ \t]*(#|$)/) { allowed[entry] = 1; nallowed++ }
    }
    /^[^ \t]/ {
        split($0, f, "\t"); key = f[1]; seen[key] = 1
        shown = !(key in allowed)
        if (shown) { print "structure: " $0; status = 1 }
        next
    }
    shown { print }
    END {
        for (e in allowed) if (!(e in seen)) {
            print "structure: " allow " lists \"" e "\", which is no longer needed: remove it"
            status = 1
        }
        if (!status) print "structure: no import cycles, no production file over " max " lines (" nallowed + 0 " known exceptions)"
        exit status
    }
' "$found"
