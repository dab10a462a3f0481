//! Rule definitions: the built-in packs and custom rules (rules file or directive).
//!
//! Patterns are `regex` crate syntax, byte-oriented and ASCII (`(?-u)`), matched against the
//! value after the rule's transform pipeline. The engine compiles every rule sharing a
//! pipeline into one `RegexSet`, so a value is scanned once per pipeline — linear time, no
//! backtracking, whatever the input.

use serde::Deserialize;

use crate::parse::{self, ConfError};

use super::transform::Transform::{self, *};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Sqli,
    Xss,
    Rce,
    Lfi,
    Rfi,
    Php,
    Java,
    Node,
    Protocol,
    Custom,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Sqli,
        Family::Xss,
        Family::Rce,
        Family::Lfi,
        Family::Rfi,
        Family::Php,
        Family::Java,
        Family::Node,
        Family::Protocol,
        Family::Custom,
    ];

    pub fn tag(self) -> &'static str {
        match self {
            Family::Sqli => "sqli",
            Family::Xss => "xss",
            Family::Rce => "rce",
            Family::Lfi => "lfi",
            Family::Rfi => "rfi",
            Family::Php => "php",
            Family::Java => "java",
            Family::Node => "node",
            Family::Protocol => "protocol",
            Family::Custom => "custom",
        }
    }
}

/// Where a rule looks.
pub mod target {
    pub const PATH: u8 = 1;
    pub const ARG_NAMES: u8 = 2;
    pub const ARG_VALUES: u8 = 4;
    pub const COOKIES: u8 = 8;
    pub const HEADERS: u8 = 16;
    pub const BODY_NAMES: u8 = 32;
    pub const BODY_VALUES: u8 = 64;
    pub const VALUES: u8 = ARG_VALUES | COOKIES | HEADERS | BODY_VALUES;
    pub const ALL: u8 = 0x7f;

    pub fn parse(name: &str) -> Option<u8> {
        Some(match name {
            "path" => PATH,
            "args" => ARG_NAMES | ARG_VALUES,
            "args_names" => ARG_NAMES,
            "args_values" => ARG_VALUES,
            "cookies" => COOKIES,
            "headers" => HEADERS,
            "body" => BODY_NAMES | BODY_VALUES,
            "body_names" => BODY_NAMES,
            "body_values" => BODY_VALUES,
            "all" => ALL,
            _ => return None,
        })
    }
}

/// Compared whole (pattern, targets, pipeline...): locations share a compiled engine only
/// when their rules are the same, not merely their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub family: Family,
    pub msg: String,
    pub score: u32,
    pub paranoia: u8,
    pub targets: u8,
    pub tags: Vec<String>,
    pub pipeline: Vec<Transform>,
    pub pattern: String,
}

pub const CRITICAL: u32 = 5;
pub const ERROR: u32 = 4;
pub const WARNING: u32 = 3;
pub const NOTICE: u32 = 2;

const SQL: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase, RemoveComments, CompressWhitespace];
const TEXT: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase, CompressWhitespace];
const MARKUP: &[Transform] = &[UrlDecode, HtmlDecode, RemoveControls, Lowercase, CompressWhitespace];
const PATH: &[Transform] = &[UrlDecode, Lowercase, NormalizePath];
/// One decoding level: what is still encoded after it was encoded twice on purpose.
const RAW: &[Transform] = &[UrlDecodeOnce, Lowercase];
/// Commands: newlines are separators, so whitespace is not compressed.
const CMD: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase];
const BASE64_PATH: &[Transform] = &[UrlDecodeOnce, Base64Decode, Lowercase, NormalizePath];

type Def = (u32, Family, u32, u8, &'static [Transform], &'static str, &'static str);

/// The built-in packs: (id, family, score, paranoia, pipeline, pattern, message).
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
    (942300, Family::Sqli, WARNING, 2, SQL, r"\bselect\b.{1,100}?\bfrom\b", "SELECT ... FROM"),
    (942310, Family::Sqli, WARNING, 2, SQL, r#"['"`] ?(?:or|and) ['"`]?\w"#, "quote followed by boolean keyword"),
    (942320, Family::Sqli, NOTICE, 3, SQL, r#"['"`;]"#, "SQL meta-character"),
    // --- XSS --------------------------------------------------------------------------------
    (941100, Family::Xss, CRITICAL, 1, MARKUP, r"<script\b|</script", "script tag"),
    (
        941110,
        Family::Xss,
        CRITICAL,
        1,
        TEXT,
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
    (941170, Family::Xss, WARNING, 2, MARKUP, r"<[a-z/!?]", "markup"),
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
        WARNING,
        2,
        TEXT,
        r"\b(?:which|whoami|uname|ifconfig|systeminfo|sysinfo|netstat|tasklist)\b",
        "reconnaissance command",
    ),
    // --- Local file inclusion / path traversal ----------------------------------------------
    (930100, Family::Lfi, CRITICAL, 1, PATH, r"(?:^|/)\.\.(?:/|$|;|\x00)", "path traversal"),
    (
        930110,
        Family::Lfi,
        CRITICAL,
        1,
        RAW,
        r"\.\.(?:%2f|%5c|2f|5c|%c0%af|%c1%9c|%255c|%252f|0x2f|0x5c)|%2e%2e(?:%2f|%5c|/|\\)|%c0%ae|%e0%80%ae|%uff0e|%u2215|%u2216|%u002e|%252e%252e|\.%00|%00\.",
        "encoded traversal",
    ),
    (
        930120,
        Family::Lfi,
        CRITICAL,
        1,
        PATH,
        r"(?:^|/|=)(?:etc/(?:passwd|shadow|group|hosts|hostname|issue|fstab|mtab|motd|inittab|crontab|sudoers|resolv\.conf|network|sysconfig|httpd|apache2?|nginx|php\d?|mysql|ssh|security|ld\.so|profile|bashrc|init\.d|rc\.d|master\.passwd|vhcs2|chrootusers|ftpchroot|logrotate|redhat-release|debian_version|lsb-release|syslog|x11|cups|samba|pure-ftpd|proftpd|vsftpd|pam\.d|modules|inetd|xinetd|mail|postfix|exim|dovecot|ldap|sysctl|default|termcap|ppp|squid|snmp|cron)|proc/(?:self|\d+|version|cmdline|mounts|net|sched_debug|cpuinfo|meminfo|interrupts|partitions|stat)|var/(?:log|lib|mail|spool|run|www|cpanel|adm|apache2?)|usr/(?:local/)?(?:etc|apache2?|httpd|lib|share|pkg|bin|sbin|include)|opt/(?:lampp|xampp|apache|tomcat|nginx|lsws)|root/|home/[^/]+/\.|boot/|bin/|sbin/|windows/|winnt/|inetpub/|xampp/|program files|system32/|sys/(?:kernel|class|power)|dev/(?:tcp|udp|null|zero)|(?:usr/local/)?apache2?/(?:logs|conf)|tmp/sess_)",
        "sensitive system path",
    ),
    (
        930130,
        Family::Lfi,
        CRITICAL,
        1,
        PATH,
        r"(?:^|/)(?:\.htaccess|\.htpasswd|\.htdigest|\.bash_history|\.bash_profile|\.bashrc|\.profile|\.ssh/|id_rsa|id_dsa|authorized_keys|\.git/|\.svn/|\.hg/|\.env$|\.env\b|web\.config|wp-config\.php|boot\.ini|win\.ini|system\.ini|php\.ini|my\.cnf|httpd\.conf|access[._]log|error[._]log|desktop\.ini|metabase\.xml|repair/sam)",
        "sensitive file name",
    ),
    (
        930140,
        Family::Lfi,
        CRITICAL,
        1,
        PATH,
        r"(?:^|/)[\w-]*(?:config|conf|database|db|dbase|install|setup|settings|passwd|password|admin|secret|credentials|backup|dump)[\w-]*\.(?:php\d?|inc|asp|aspx|jsp|js|ini|conf|cfg|yml|yaml|bak|old|sql|log)\b",
        "configuration or backup file",
    ),
    (
        930160,
        Family::Lfi,
        CRITICAL,
        1,
        PATH,
        r"^(?:[a-z]:)?/(?:etc|usr|var|proc|opt|root|sys|boot|bin|sbin|lib|lib64|srv|mnt|private)/|^/\.[a-z]|(?:^|/)pass(?:wd)?\.dat$|(?:^|/)logs?/(?:[^/]+/)*[\w.-]*log$|^(?:\.\./)*etc/",
        "absolute system path",
    ),
    (
        930170,
        Family::Lfi,
        CRITICAL,
        1,
        BASE64_PATH,
        r"(?:^|/)\.\./|(?:^|/)etc/(?:passwd|shadow|hosts)|^/(?:etc|proc|var)/",
        "base64-wrapped traversal",
    ),
    (
        930150,
        Family::Lfi,
        CRITICAL,
        1,
        PATH,
        r"^(?:[a-z]:)?/(?:apache\d?|apache[\w-]*|httpd|nginx|lighttpd|tomcat\d?|jboss|weblogic|websphere|iis\d?|php\d?|mysql|xampp|wamp|appserv|program files)\b|^[a-z]:/",
        "server installation path",
    ),
    // --- Remote file inclusion --------------------------------------------------------------
    (
        931100,
        Family::Rfi,
        CRITICAL,
        1,
        TEXT,
        r"^(?:php|file|expect|zip|phar|glob|gopher|dict|ldap|jar|data|zlib|compress\.zlib|ogg|rar|ssh2|ftp)://|\bphp://(?:input|filter|stdin|memory|temp|fd)",
        "stream wrapper",
    ),
    (
        931110,
        Family::Rfi,
        ERROR,
        2,
        TEXT,
        r"^(?:https?|ftps?)://(?:\d{1,3}\.){3}\d{1,3}\b|^(?:https?|ftps?)://[^?#]*\?+$",
        "URL to a raw IP or ending in ?",
    ),
    // --- PHP ---------------------------------------------------------------------------------
    (933100, Family::Php, CRITICAL, 1, TEXT, r"<\?(?:php\b|=)|\?>\s*$", "PHP open tag"),
    (
        933110,
        Family::Php,
        CRITICAL,
        1,
        TEXT,
        r"\b(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|eval|assert|create_function|call_user_func(?:_array)?|preg_replace|include|include_once|require|require_once|file_get_contents|file_put_contents|fopen|readfile|base64_decode|gzinflate|str_rot13|phpinfo|phpversion|unserialize|move_uploaded_file)\s*\(",
        "PHP function call",
    ),
    (
        933120,
        Family::Php,
        CRITICAL,
        1,
        TEXT,
        r"\$_(?:get|post|request|cookie|server|files|env|session)\b|\b(?:o|a):\d+:(?:\x22|\{)",
        "PHP superglobal or serialized object",
    ),
    // --- Java ---------------------------------------------------------------------------------
    (
        944100,
        Family::Java,
        CRITICAL,
        1,
        TEXT,
        r"\$\{\s*(?:jndi|ldap|rmi|dns|env|sys|java|lower|upper|::-|date|main|bundle|ctx|spring|k8s|docker|log4j)\b|\$\{[^}]{0,40}\$\{",
        "log4j lookup",
    ),
    (
        944110,
        Family::Java,
        CRITICAL,
        1,
        TEXT,
        r"\bjava\.(?:lang\.(?:runtime|processbuilder|system|class|reflect)|io\.file|net\.url)\b|\bgetruntime\s*\(|\bclass\.(?:module|classloader)\b|\bclassloader\b|@java\.lang|\bjavax\.script\b",
        "Java reflection or process",
    ),
    (
        944120,
        Family::Java,
        CRITICAL,
        1,
        TEXT,
        r"%\{\s*[#(@]|#\{[^}]*[.(][^}]*\}|\$\{[^}]*(?:\.|\()[^}]*\}|#_memberaccess|@ognl",
        "expression language injection",
    ),
    (944130, Family::Java, CRITICAL, 1, RAW, r"\xac\xed\x00\x05|ro0ab|rO0AB", "Java serialized object"),
    // --- Node.js ------------------------------------------------------------------------------
    (
        934100,
        Family::Node,
        CRITICAL,
        1,
        TEXT,
        r"__proto__|\bconstructor\s*(?:\.|\[)\s*['`]?prototype|\bconstructor\s*\(\s*['`]return",
        "prototype pollution",
    ),
    (
        934110,
        Family::Node,
        CRITICAL,
        1,
        TEXT,
        r#"\brequire\s*\(\s*['"`](?:child_process|fs|net|vm|os|http)['"`]|\bprocess\.(?:mainmodule|binding|env|exit|kill)\b|\bnew\s+function\s*\(|\bchild_process\b|\.spawn(?:sync)?\s*\("#,
        "Node.js code execution",
    ),
    // --- Protocol -----------------------------------------------------------------------------
    (
        921100,
        Family::Protocol,
        CRITICAL,
        1,
        &[UrlDecode],
        r"[\r\n]\s*(?i:[a-z-]+)\s*:|[\r\n]{2}|\r\n\s*<",
        "CRLF injection",
    ),
    (
        921110,
        Family::Protocol,
        CRITICAL,
        1,
        &[UrlDecode, Lowercase],
        r"\bhttp/\d\.\d\r?\n|\r?\n(?:get|post|head|put|delete|options) /",
        "smuggled request line",
    ),
];

pub fn builtin() -> Vec<Rule> {
    BUILTIN
        .iter()
        .map(|&(id, family, score, paranoia, pipeline, pattern, msg)| Rule {
            id,
            family,
            msg: msg.to_string(),
            score,
            paranoia,
            targets: target::ALL,
            tags: vec![family.tag().to_string()],
            pipeline: pipeline.to_vec(),
            pattern: pattern.to_string(),
        })
        .collect()
}

/// A custom rule as written in a rules file (JSON array) or a `shield_filter_rule` directive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Numbers are read wide and range-checked here, so `257` is refused, never wrapped.
    pub id: u64,
    #[serde(default)]
    pub msg: String,
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub transforms: Vec<String>,
    pub pattern: String,
    #[serde(default = "default_score")]
    pub score: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_paranoia")]
    pub paranoia: u64,
}

/// A rule's score: at most the largest `shield_filter_threshold`.
pub const MAX_SCORE: u64 = 9999;

fn default_targets() -> Vec<String> {
    vec!["all".into()]
}
fn default_score() -> u64 {
    u64::from(CRITICAL)
}
fn default_paranoia() -> u64 {
    1
}

fn in_range(what: &'static str, n: u64, min: u64, max: u64) -> Result<u64, ConfError> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ConfError::OutOfRange { what, value: n.to_string(), min, max })
    }
}

impl RuleSpec {
    pub fn into_rule(self) -> Result<Rule, ConfError> {
        let id = in_range("id", self.id, 1, u64::from(u32::MAX))? as u32;
        let score = in_range("score", self.score, 0, MAX_SCORE)? as u32;
        let paranoia = in_range("paranoia", self.paranoia, 1, 4)? as u8;
        let mut targets = 0u8;
        for t in &self.targets {
            targets |= target::parse(t).ok_or_else(|| format!("rule {id}: unknown target \"{t}\""))?;
        }
        let pipeline = self
            .transforms
            .iter()
            .map(|t| Transform::parse(t).ok_or_else(|| format!("rule {id}: unknown transform \"{t}\"")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tags = self.tags;
        if !tags.iter().any(|t| t == "custom") {
            tags.push("custom".into());
        }
        let rule = Rule {
            id,
            family: Family::Custom,
            msg: self.msg,
            score,
            paranoia,
            targets,
            tags,
            pipeline,
            pattern: self.pattern,
        };
        check_pattern(&rule)?;
        Ok(rule)
    }
}

/// Compiles one rule's pattern as the engine will, so a bad one is reported with its rule.
pub fn check_pattern(rule: &Rule) -> Result<(), String> {
    regex::bytes::RegexBuilder::new(&rule.pattern)
        .unicode(false)
        .size_limit(2 << 20)
        .build()
        .map(drop)
        .map_err(|e| format!("rule {}: invalid pattern: {e}", rule.id))
}

/// The line (1-based) where each element of a JSON array starts.
fn element_lines(text: &str) -> Vec<usize> {
    let (mut lines, mut line, mut depth, mut in_string, mut escaped) = (Vec::new(), 1, 0usize, false, false);
    for b in text.bytes() {
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            match (escaped, b) {
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => escaped = false,
            }
            continue;
        }
        let starts_element = depth == 1 && !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b',' | b']');
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if starts_element {
            lines.push(line);
        }
    }
    lines
}

/// Parses a rules file: a JSON array of rules. An error comes with the line it is about:
/// the rule's own line for a bad rule, serde's for bad JSON.
pub fn parse_rules_file(text: &str) -> Result<Vec<Rule>, (usize, String)> {
    let elements: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| (e.line(), format!("invalid rules file: {e}")))?;
    let lines = element_lines(text);
    let mut ids: std::collections::HashSet<u32> = BUILTIN.iter().map(|d| d.0).collect();
    let mut rules = Vec::with_capacity(elements.len());
    for (k, element) in elements.into_iter().enumerate() {
        let line = lines.get(k).copied().unwrap_or(1);
        let spec: RuleSpec = serde_json::from_value(element).map_err(|e| (line, format!("invalid rule: {e}")))?;
        let rule = spec.into_rule().map_err(|e| (line, e.to_string()))?;
        if !ids.insert(rule.id) {
            return Err((line, format!("rule {} is duplicate", rule.id)));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Parses `shield_filter_rule id=N pattern=RE [targets=a,b] [transforms=x,y] [score=N] [tags=t]
/// [paranoia=N] [msg=text]`.
pub fn parse_rule_args(args: &[&str]) -> Result<Rule, ConfError> {
    let mut spec = RuleSpec {
        id: 0,
        msg: String::new(),
        targets: default_targets(),
        transforms: Vec::new(),
        pattern: String::new(),
        score: default_score(),
        tags: Vec::new(),
        paranoia: default_paranoia(),
    };
    let list = |v: &str| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>();
    for arg in args {
        let (k, v) = arg.split_once('=').ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))?;
        match k {
            "id" => spec.id = parse::bounded("id", v, 1, u64::from(u32::MAX))?,
            "pattern" => spec.pattern = v.to_string(),
            "targets" => spec.targets = list(v),
            "transforms" => spec.transforms = list(v),
            "score" => spec.score = parse::bounded("score", v, 0, MAX_SCORE)?,
            "tags" => spec.tags = list(v),
            "paranoia" => spec.paranoia = parse::bounded("paranoia", v, 1, 4)?,
            "msg" => spec.msg = v.to_string(),
            _ => return Err(ConfError::InvalidParameter(arg.to_string())),
        }
    }
    if spec.id == 0 {
        return Err(ConfError::MissingParameter("id"));
    }
    if spec.pattern.is_empty() {
        return Err(ConfError::MissingParameter("pattern"));
    }
    spec.into_rule()
}
