//! The built-in rule packs (the zero-configuration default): the rules by family, their
//! transform pipelines, scores and paranoia levels.
//!
//! Scoring (anomaly threshold 5 by default): paranoia-1 rules are precise and critical (5), one
//! match blocks. Paranoia 2 adds critical rules that are precise enough to block alone but too
//! broad for every site (a raw-IP URL, `select ... from`, an HTML tag, private addresses in a
//! URL, session-id parameter names) and warnings (3) for broad signals (command chaining,
//! quote + boolean keyword) that block only with a second finding. Paranoia 3 adds notices (2):
//! single meta-characters.

use super::rules::{target, Family, Rule, CRITICAL, NOTICE, WARNING};
use super::transform::Transform::{self, *};

pub(super) const SQL: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase, RemoveComments, CompressWhitespace];
pub(super) const TEXT: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase, CompressWhitespace];
/// Markup and script: JavaScript escapes (`\u003cscript\u003e`) decoded after HTML entities.
pub(super) const MARKUP: &[Transform] =
    &[UrlDecode, HtmlDecode, JsDecode, RemoveControls, Lowercase, CompressWhitespace];
/// Script text where tabs and newlines separate words (event handlers, Node.js code).
pub(super) const SCRIPT: &[Transform] = &[UrlDecode, HtmlDecode, JsDecode, Lowercase, CompressWhitespace];
/// Names and identifiers: one decoding, case folded.
pub(super) const NAME: &[Transform] = &[UrlDecode, Lowercase];
pub(super) const PATH: &[Transform] = &[UrlDecode, Lowercase, NormalizePath];
/// One decoding level: what is still encoded after it was encoded twice on purpose.
pub(super) const RAW: &[Transform] = &[UrlDecodeOnce, Lowercase];
/// Commands: newlines are separators, so whitespace is not compressed.
pub(super) const CMD: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase];
pub(super) const BASE64_PATH: &[Transform] = &[UrlDecodeOnce, Base64Decode, Lowercase, NormalizePath];

pub(super) type Def = (u32, Family, u32, u8, &'static [Transform], &'static str, &'static str);

/// The built-in packs: (id, family, score, paranoia, pipeline, pattern, message). SQL
/// injection, XSS and Unix commands here; the other families in `packs_more`.
const BUILTIN: &[Def] = &[
    // --- SQL injection ---------------------------------------------------------------------
    (
        942100,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\bunion\b(?: (?:all|distinct))? ?\(? ?select(?:\b|char ?\()",
        "UNION SELECT",
    ),
    (
        942110,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r#"['"`)] ?(?:or|and|xor|\|\||&&) ?\(* ?(?:['"`]{2}|['"`]?[\w.@]*['"`]?\)* ?(?:=|<>|!=|<=|>=|<|>|\blike\b|\bregexp\b|\bsounds like\b|\bbetween\b)|\d+ ?(?:$|--|#|;)|true\b|false\b|not\b|\(?select\b|sleep\b|benchmark\b)"#,
        "boolean tautology after a quote",
    ),
    (
        942120,
        Family::Sqli,
        CRITICAL,
        1,
        TEXT,
        r#"['"`] ?\)* ?(?:--(?:\s|$)|/\*)|[a-z0-9]['"`]\)* ?#\s*$"#,
        "quote closed then comment",
    ),
    (
        942125,
        Family::Sqli,
        CRITICAL,
        1,
        TEXT,
        r#"^\s*['"`]\s*[-+&^|%/ ]?\s*['"`]\s*$|^\s*(?:or|and|\|\|) (?:true|false|\d+ ?(?:=|<|>) ?\d+|\d+\s*(?:--|#|$))"#,
        "quote probe or dangling boolean",
    ),
    (
        942130,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\b(?:sleep|benchmark|pg_sleep|dbms_pipe\.receive_message|dbms_lock\.sleep) ?\(|\bwaitfor (?:delay|time)\b",
        "time-based probe",
    ),
    (
        942140,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r";\s*(?:(?:select|insert|update|delete|drop|create|alter|declare|shutdown|truncate|grant|revoke|rename)\b\s*\S|exec(?:ute)?\s+(?:master|xp_|sp_|\(|@))",
        "stacked query",
    ),
    (
        942150,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"@@(?:version|datadir|hostname|basedir|servername|identity)|\binformation_schema\b|\b(?:sysobjects|syscolumns|sys\.tables|mysql\.user|pg_shadow|pg_catalog|all_tables|user_tables)\b",
        "database metadata",
    ),
    (
        942160,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\b(?:load_file|extractvalue|updatexml|utl_inaddr\.get_host_address|utl_http\.request|xp_cmdshell|xp_regread|sp_oacreate|sp_executesql|sp_password|xp_dirtree)\b|\binto (?:out|dump)file\b",
        "dangerous SQL function",
    ),
    (
        942170,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\bchar ?\( ?\d+ ?\) ?(?:\+|\|\||,)|['`]\s*\|\|\s*['`]|\b(?:concat|concat_ws|group_concat) ?\( ?(?:0x|@@|char ?\(|database ?\(|user ?\(|version ?\()",
        "string building",
    ),
    (
        942180,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\b(?:and|or|xor|having|where) \(?\d+ ?(?:=|<|>|<>) ?\(?(?:\d+\b|select\b|convert\b|cast\b|\(select)",
        "numeric tautology",
    ),
    (
        942190,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\bexec(?:ute)? (?:master\.|xp_|sp_)|\bcase when\b[^;]{0,80}\bthen\b|\bif ?\( ?(?:\d|substr|ascii|length|@@|\(select)",
        "conditional or procedure execution",
    ),
    (
        942200,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\border by \d+ ?(?:--|#|$|,\s*\d)|\bgroup by \d+ ?(?:--|#|$)|\bselect (?:\d+ ?,|count ?\(\*\)|null\b|@@|\*)",
        "column probing",
    ),
    (
        942210,
        Family::Sqli,
        CRITICAL,
        1,
        SQL,
        r"\b(?:drop|alter|truncate) (?:table|database|schema|user|column)\b|\binsert into\b|\bdelete from\b|\bupdate \w+ set\b",
        "data manipulation statement",
    ),
    (
        942300,
        Family::Sqli,
        CRITICAL,
        2,
        SQL,
        r#"\bselect (?:(?:distinct|all|top \d+) )?(?:\*|[\w.`"\[\]@]+(?: ?\(\*?\))?(?: as [\w`"]+)?(?: ?, ?[\w.`"\[\]@]+(?: ?\(\*?\))?(?: as [\w`"]+)?)*) from\b"#,
        "SELECT column list FROM",
    ),
    (942305, Family::Sqli, WARNING, 2, SQL, r"\bselect\b.{1,100}?\bfrom\b", "SELECT ... FROM"),
    (942310, Family::Sqli, WARNING, 2, SQL, r#"['"`] ?(?:or|and) ['"`]?\w"#, "quote followed by boolean keyword"),
    (942320, Family::Sqli, NOTICE, 3, SQL, r#"['"`;]"#, "SQL meta-character"),
    // --- XSS --------------------------------------------------------------------------------
    (941100, Family::Xss, CRITICAL, 1, MARKUP, r"<script\b|</script", "script tag"),
    (
        941110,
        Family::Xss,
        CRITICAL,
        1,
        SCRIPT,
        r#"<[a-z][^>]*?[\s/'"`]on[a-z]{3,30} ?=|['"`] ?[\s/]*on[a-z]{3,30} ?="#,
        "event handler attribute",
    ),
    (
        941120,
        Family::Xss,
        CRITICAL,
        1,
        MARKUP,
        r"\b(?:java|vb|live)script ?:|\bdata ?: ?(?:text/html|image/svg|application/(?:x-)?javascript)|\bdata:[^,]{0,40};base64,",
        "script URL",
    ),
    (
        941130,
        Family::Xss,
        CRITICAL,
        1,
        MARKUP,
        r"<(?:iframe|frame|frameset|object|embed|applet|svg|math|meta|base|link|style|xss|isindex|xml|template|marquee|bgsound|layer|ilayer|import|animate|set|image|video|audio|source|body|html|form|details|dialog|keygen)\b",
        "active content tag",
    ),
    (
        941140,
        Family::Xss,
        CRITICAL,
        1,
        MARKUP,
        r"<[a-z]+\b[^>]*?\b(?:formaction|background|dynsrc|lowsrc|xlink:href|srcdoc)\b ?=|<(?:img|image|input|video|audio|source)\b[^>]*?\bsrc ?= ?['`]? ?(?:\S*\.(?:js|svg)\b|[^'`\s>]*\()",
        "markup with URL or style attribute",
    ),
    (
        941150,
        Family::Xss,
        CRITICAL,
        1,
        MARKUP,
        r"\b(?:alert|prompt|confirm|eval|settimeout|setinterval|execscript|msgbox)\b ?(?:\(|`)|\b(?:document\.(?:cookie|domain|write|location)|window\.location|\.innerhtml|fromcharcode|\.src ?=|top\[|self\[)",
        "script call",
    ),
    (
        941160,
        Family::Xss,
        CRITICAL,
        1,
        MARKUP,
        r"\bexpression ?\(|url ?\( ?['`]? ?(?:javascript|vbscript|data):|-moz-binding|behavior ?:|@import\b",
        "CSS injection",
    ),
    (
        941170,
        Family::Xss,
        CRITICAL,
        2,
        MARKUP,
        r"<(?:a|b|i|u|s|p|q|br|hr|em|li|ol|ul|dl|dt|dd|tt|h[1-6]|div|span|img|input|button|select|option|textarea|table|tr|td|th|font|center|blink|area|map|label|noscript|plaintext|xmp|listing|title|head|pre|code|sub|sup|strong|small|big|strike|del|ins|nav|main|section|article|header|footer|picture|canvas|noembed|noframes|param|track|output|slot|shadow|portal)\b[^<]{0,200}>|<!\[cdata\[|<!--",
        "HTML tag",
    ),
    (941175, Family::Xss, WARNING, 2, MARKUP, r"<[a-z/!?]", "markup"),
    // --- Command injection ------------------------------------------------------------------
    (
        932100,
        Family::Rce,
        CRITICAL,
        1,
        CMD,
        r"(?:[;|`\n&]|\\n|\\r|\$\(|\|\||&&)\s*(?:/(?:usr/)?s?bin/)?(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|csh|dash|python[23]?|perl|ruby|php|lua|ping|nslookup|dig|sleep|echo|rm|chmod|chown|kill|killall|ps|ifconfig|ipconfig|netstat|systeminfo|sysinfo|dir|type|net|netsh|pwd|tasklist|taskkill|ver|powershell|pwsh|cmd|cmd\.exe|telnet|ftp|tftp|nmap|passwd|shutdown|reboot|printenv|hostname|uptime|crontab|sudo|su|xterm|socat|certutil|bitsadmin|wmic|reg|mshta|rundll32|cscript|wscript|base64|xxd|nohup|env|awk|sed|grep|tar|which)\b(?:$|[\s;&|<>`)'(\\])",
        "shell command after a separator",
    ),
    (
        932101,
        Family::Rce,
        CRITICAL,
        1,
        CMD,
        r#"(?:^|['"])\s*(?:whoami|uname -|ifconfig|ipconfig|systeminfo|sysinfo|netstat -|tasklist|nslookup \S|wget (?:-|https?://|ftp://)|curl (?:-|https?://|ftp://)|nc -|ncat |netcat |bash -|powershell|cmd(?:\.exe)? /|/(?:usr/)?s?bin/\w)"#,
        "shell command",
    ),
    (
        932102,
        Family::Rce,
        CRITICAL,
        1,
        CMD,
        r"^\s*(?:whoami|ifconfig|ipconfig|systeminfo|sysinfo|netstat|uname|pwd|tasklist|netsh\b.*|ls(?: -[a-z]+)?(?: /\S*)?|dir(?: [a-z]:\\\S*)?|sleep \d+|which [a-z]+|net (?:user|view|localgroup|share|use|start|stop|group|accounts)\b.*|perl -e\b.*|python[23]? -c\b.*|ruby -e\b.*|php -r\b.*|reg (?:add|query|delete|save)\b.*|ping -[a-z]\b.*|cat /\S+)\s*$",
        "whole value is a shell command",
    ),
    (
        932103,
        Family::Rce,
        CRITICAL,
        1,
        TEXT,
        r"\{\{[^}]{0,120}[.+*(\[_][^}]{0,120}\}\}|\{%\s*(?:for|if|set|import|include|extends|block|macro|raw|print|load|with)\b|\$\{\{",
        "template injection",
    ),
    (
        932110,
        Family::Rce,
        CRITICAL,
        1,
        CMD,
        r"\$\(\s*[a-z/]|`\s*(?:/|(?:id|whoami|uname|cat|ls|wget|curl|nc|bash|sh|sleep|ping|echo|rm|chmod|python|perl|php|nslookup|dig)\b[^`]*`)|\$\{ifs\}|\$ifs\b|\{(?:cat|ls|id|echo|wget|curl),",
        "command substitution",
    ),
    (
        932120,
        Family::Rce,
        CRITICAL,
        1,
        TEXT,
        r"/(?:usr/)?(?:local/)?s?bin/(?:[a-z0-9]+)|\bcmd(?:\.exe)? ?/[ck]\b|\bpowershell(?:\.exe)?\b|%systemroot%|%comspec%|\bc:\\+(?:windows|winnt|documents and settings|boot\.ini|inetpub)",
        "interpreter or system binary",
    ),
    (
        932130,
        Family::Rce,
        CRITICAL,
        1,
        TEXT,
        r"<!--\s*#\s*(?:exec|include|echo|config|printenv|fsize|flastmod)\b",
        "server-side include",
    ),
    (932140, Family::Rce, CRITICAL, 1, TEXT, r"\(\s*\)\s*\{[^}]*;\s*\}\s*;", "shellshock"),
    (932150, Family::Rce, WARNING, 2, TEXT, r"\|\s*(?:[a-z]+\b|/)|&&\s*[a-z/]|\|\|\s*[a-z/`]", "command chaining"),
    (
        932160,
        Family::Rce,
        CRITICAL,
        2,
        TEXT,
        r"\b(?:whoami|uname|ifconfig|ipconfig|systeminfo|sysinfo|netstat|tasklist|getuid|nslookup)\b",
        "reconnaissance command",
    ),
];

fn all() -> impl Iterator<Item = &'static Def> {
    BUILTIN.iter().chain(super::packs_more::MORE)
}

pub fn builtin() -> Vec<Rule> {
    all()
        .map(|&(id, family, score, paranoia, pipeline, pattern, msg)| Rule {
            id,
            family,
            msg: msg.to_string(),
            score,
            paranoia,
            targets: targets(id),
            tags: vec![family.tag().to_string()],
            pipeline: pipeline.to_vec(),
            pattern: pattern.to_string(),
        })
        .collect()
}

/// Rules that only mean an attack when the request does not come from a page of the same
/// site (no `Referer`, or another site's): an argument named like a session id is how a
/// session is fixed from a link elsewhere, and how PHP's `session.use_trans_sid` links within
/// the site carry it (CRS 943110/943120).
pub const OFF_SITE_ONLY: &[u32] = &[943120, 943121];

/// Where a built-in rule looks: everywhere, except rules on URLs to internal hosts (a `Referer`
/// or `Origin` of a site under development is `http://localhost:3000`) and on names.
fn targets(id: u32) -> u8 {
    const VALUES_NOT_HEADERS: u8 = target::ARG_VALUES | target::BODY_VALUES | target::COOKIES;
    match id {
        931110 | 934190 | 934195 => VALUES_NOT_HEADERS,
        943120 | 943121 => target::ARG_NAMES | target::BODY_NAMES,
        _ => target::ALL,
    }
}

/// The ids of the built-in rules (custom rules may not reuse them).
pub fn builtin_ids() -> impl Iterator<Item = u32> {
    all().map(|d| d.0)
}
