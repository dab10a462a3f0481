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

const SQL: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase, RemoveComments, CompressWhitespace];
const TEXT: &[Transform] = &[UrlDecode, HtmlDecode, Lowercase, CompressWhitespace];
/// Markup and script: JavaScript escapes (`\u003cscript\u003e`) decoded after HTML entities.
const MARKUP: &[Transform] = &[UrlDecode, HtmlDecode, JsDecode, RemoveControls, Lowercase, CompressWhitespace];
/// Script text where tabs and newlines separate words (event handlers, Node.js code).
const SCRIPT: &[Transform] = &[UrlDecode, HtmlDecode, JsDecode, Lowercase, CompressWhitespace];
/// Names and identifiers: one decoding, case folded.
const NAME: &[Transform] = &[UrlDecode, Lowercase];
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
        CRITICAL,
        2,
        TEXT,
        r"^(?:https?|ftps?)://(?:\d{1,3}\.){3}\d{1,3}\b|^(?:https?|ftps?)://[^?#]*\?+$",
        "URL to a raw IP or ending in ?",
    ),
    (
        931120,
        Family::Rfi,
        CRITICAL,
        1,
        TEXT,
        r"<!entity\s+(?:%\s*)?[\w.:-]+\s+(?:system|public)\b",
        "XML external entity",
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
    (
        944115,
        Family::Java,
        CRITICAL,
        1,
        TEXT,
        r"\bjava\..*\b(?:runtime|processbuilder)\b|\b(?:runtime|processbuilder)\b.*\bjava\.",
        "Java process classes",
    ),
    (
        944125,
        Family::Java,
        CRITICAL,
        1,
        TEXT,
        r"\b(?:runtime|processbuilder)\b.*\b(?:clonetransformer|forclosure|instantiatefactory|instantiatetransformer|invokertransformer|prototypeclonefactory|prototypeserializationfactory|whileclosure|getproperty|filewriter|xmldecoder)\b|\b(?:clonetransformer|forclosure|instantiatefactory|instantiatetransformer|invokertransformer|prototypeclonefactory|prototypeserializationfactory|whileclosure|getproperty|filewriter|xmldecoder)\b.*\b(?:runtime|processbuilder)\b",
        "Java deserialization gadget",
    ),
    (944130, Family::Java, CRITICAL, 1, RAW, r"\xac\xed\x00\x05|ro0ab|rO0AB", "Java serialized object"),
    // --- Node.js ------------------------------------------------------------------------------
    (
        934100,
        Family::Node,
        CRITICAL,
        1,
        SCRIPT,
        r"__proto__|\bconstructor\s*(?:\.|\[)\s*['`]?prototype|\bconstructor\s*\(\s*['`]return",
        "prototype pollution",
    ),
    (
        934110,
        Family::Node,
        CRITICAL,
        1,
        SCRIPT,
        r#"\brequire\s*\(\s*['"`](?:child_process|fs|net|vm|os|http)['"`]|\bprocess\.(?:mainmodule|binding|env|exit|kill)\b|\bnew\s+function\s*\(|\bchild_process\b|\.spawn(?:sync)?\s*\("#,
        "Node.js code execution",
    ),
    (934105, Family::Node, CRITICAL, 1, SCRIPT, r"_\$\$nd_func\$\$_", "node-serialize function (deserialization)"),
    // --- Windows command injection ----------------------------------------------------------
    (
        932115,
        Family::Rce,
        CRITICAL,
        1,
        CMD,
        r#"\bc\^?m\^?d(?:\.exe)?\b["^\s]{0,8}/[ckr]\b|\bp\^?o\^?w\^?e\^?r\^?s\^?h\^?e\^?l\^?l(?:\.exe)?\b[^\n]{0,60}?\s[-/](?:e|en|enc|encodedcommand|ec|c|command|w|windowstyle|nop|noprofile|noni|noninteractive|ep|exec|executionpolicy|file|f)\b|\bpwsh(?:\.exe)?\s+-|\b(?:invoke-expression|invoke-webrequest|invoke-restmethod|start-process|start-bitstransfer|invoke-command|set-mppreference)\b|\biex\s*[(\$]|\bnew-object\s+(?:system\.)?net\.webclient\b|\.download(?:string|file|data)\s*\(|\bcertutil(?:\.exe)?\s+[-/](?:urlcache|decode|encode|f)\b|\bbitsadmin(?:\.exe)?\s+/(?:transfer|create|addfile)\b|\bregsvr32(?:\.exe)?\s+/[siun]\b|\bmshta(?:\.exe)?\s+(?:https?:|javascript:|vbscript:|\\\\)|\brundll32(?:\.exe)?\s+\S+,|\bwmic(?:\.exe)?\s+(?:process|os|/node|shadowcopy|useraccount)\b|%(?:comspec|systemroot|windir|programfiles|programdata|appdata|localappdata|userprofile|temp|tmp|public|computername|username|homepath|systemdrive)%|(?:&&?|\|\|?)\s*(?:dir|type|copy|del|erase|ren|attrib|icacls|takeown|findstr|vssadmin|bcdedit|schtasks|timeout|ver|vol)(?:\s+(?:/|[a-z]:\\|%|\.|\\)|\s*$)|(?:&&?|\|\|?)\s*(?:net\s+(?:user|localgroup|view|share|use|group|accounts)|reg\s+(?:query|add|delete|save|export)|sc\s+(?:query|create|config|start|stop)|set\s+\w+=|for\s+/[flrd]\b)"#,
        "Windows command",
    ),
    // --- Session fixation -------------------------------------------------------------------
    (
        943100,
        Family::Session,
        CRITICAL,
        1,
        SCRIPT,
        r"\.cookie\b[^;]{0,200};\W{0,10}(?:expires|domain|path|max-age)\W{0,5}=|\bhttp-equiv\W{0,10}set-cookie\b|\bset-cookie\s*:\s*[\w.-]+\s*=",
        "cookie set from a value",
    ),
    (
        943110,
        Family::Session,
        CRITICAL,
        1,
        TEXT,
        r"[;?&]\s*(?:jsessionid|phpsessid|aspsessionid[a-z]{0,8}|cfid|cftoken)\s*=\s*[\w.-]{4,}",
        "session id in a URL in a value",
    ),
    (
        943120,
        Family::Session,
        CRITICAL,
        1,
        NAME,
        r"^(?:jsessionid|jservsession|jwsession|phpsessid|phpsession|aspsessionid[a-z]{0,8}|asp\.net_sessionid|zend_session_id|play_session|weblogicsession|wlsession|rack\.session|laravel_session|(?:__(?:secure|host)-)?next-auth\.session-token|meteor_login_token|session[-_]?id|sails\.sid|shiny-token|_session_id|_flask_session|_rails_session|cfs?id|cftoken|connect\.sid|cakephp|ci_session|koa[.:]sess)$",
        "session id parameter name",
    ),
    (
        943121,
        Family::Session,
        CRITICAL,
        2,
        NAME,
        r"^(?:sid|sessid|sess_id|session|sess)$",
        "generic session parameter name",
    ),
    // --- Server-side request forgery --------------------------------------------------------
    (
        934180,
        Family::Ssrf,
        CRITICAL,
        1,
        TEXT,
        r"\b169\.254\.169\.254\b|\b169\.254\.170\.2\b|\b100\.100\.100\.200\b|\bfd00:ec2::254\b|\bmetadata\.(?:google\.internal|goog|azure\.com|tencentyun\.com|packet\.net)\b|\binstance-data\.ec2\.internal\b|//instance-data\b|/latest/(?:meta-data|user-data|dynamic/instance-identity|api/token)\b|/computemetadata/v1\b|/metadata/(?:instance|identity/oauth2)\b|/openstack/latest/\b|://(?:[^/?#@\s]*@)?(?:0xa9fea9fe|2852039166|0251\.0*376\.0*251\.0*376|0xa9\.0xfe\.0xa9\.0xfe)\b",
        "cloud metadata endpoint",
    ),
    (
        934190,
        Family::Ssrf,
        CRITICAL,
        1,
        TEXT,
        r"\b(?:https?|ftps?|gopher|dict|file|ldaps?|tftp|smb|sftp|netdoc|jar|rtsp|telnet|ssh|redis|mysql|postgres(?:ql)?|mongodb)://(?:[^/?#@\s]*@)?(?:(?:localtest\.me|0(?:\.0){0,3}|0x7f[0-9a-fx.]*|2130706433|0177\.[0-7.]*|017700000001|127\.\d{1,3}(?:\.\d{1,3})?|\[(?:0{0,4}:){1,7}0{0,3}\]|\[::ffff:[0-9a-f.:]+\]|\[(?:0{1,4}:){5}ffff:[0-9a-f.:]+\]|169\.254\.\d{1,3}\.\d{1,3})(?:[:/?#\\\s]|$)|(?:127(?:\.\d{1,3}){3}|0\.0\.0\.0|169\.254\.\d{1,3}\.\d{1,3})[.-](?:nip\.io|sslip\.io|xip\.io)\b)|\bhttps?://(?:[^/?#@\s]*@)?(?:localhost|127(?:\.\d{1,3}){3}|\[(?:0{0,4}:){1,7}0{0,3}1\])(?:[/?#\\\s]|$|:(?:22|23|25|1433|1521|2375|2376|2379|3306|5432|5984|6379|6443|8500|9200|9300|10250|10255|11211|15672|27017)\b)|\b(?:ftps?|smb|sftp|ssh|telnet|redis|mysql|postgres(?:ql)?|mongodb|rtsp)://(?:[^/?#@\s]*@)?(?:localhost|127(?:\.\d{1,3}){3}|\[(?:0{0,4}:){1,7}0{0,3}1\])|\b(?:gopher|dict|tftp|netdoc|ldaps?|jar):(?://|http)|\bfile:/{2,3}",
        "URL to the server itself (its web ports or an internal service), obfuscated loopback, or a dangerous scheme",
    ),
    (
        934195,
        Family::Ssrf,
        CRITICAL,
        2,
        TEXT,
        r"\bhttps?://(?:[^/?#@\s]*@)?(?:localhost|127(?:\.\d{1,3}){3}|\[(?:0{0,4}:){1,7}0{0,3}1\]|[\w.-]+\.localhost)(?:[:/?#\\\s]|$)|://(?:[^/?#@\s]*@)?(?:10(?:\.\d{1,3}){3}|192\.168(?:\.\d{1,3}){2}|172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2}|100\.(?:6[4-9]|[7-9]\d|1[01]\d|12[0-7])(?:\.\d{1,3}){2}|\[f[cd][0-9a-f]{2}:[^\]]*\]|\[fe80:[^\]]*\]|0x[0-9a-f]{8}\b|\d{8,10}(?:[:/?#]|$)|(?:0x[0-9a-f]{1,2}\.){3}|(?:0[0-7]{1,3}\.){3}|[\w.-]+\.(?:internal|local|localdomain|intranet|corp|lan|svc|cluster\.local)(?:[:/?#]|$))",
        "URL to loopback (any port), a private, internal or obfuscated address",
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
    BUILTIN.iter().map(|d| d.0)
}
