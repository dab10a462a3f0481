//! The two inner grammars of a `SecRule`: its variable list (`ARGS|!ARGS:x|&TX:y|XML:/*`)
//! and its action list (`id:1,phase:2,t:none,setvar:'tx.a=+%{tx.b}',ctl:...`).

use super::model::Actions;
use super::model::{Ctl, Disruptive, EngineMode, LoadErrorKind, Phase, Selector, SetVar, Target};
use super::transforms::{lookup, Lookup};

pub type ActionError = (LoadErrorKind, String);

pub fn parse_targets(text: &str) -> Result<Vec<Target>, ActionError> {
    let syntax = |d: String| (LoadErrorKind::Syntax, d);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (mut exclude, mut count) = (false, false);
        match bytes[i] {
            b'!' => {
                exclude = true;
                i += 1;
            }
            b'&' => {
                count = true;
                i += 1;
            }
            _ => {}
        }
        let name_start = i;
        while i < bytes.len() && bytes[i] != b':' && bytes[i] != b'|' {
            i += 1;
        }
        let collection = text[name_start..i].trim().to_ascii_uppercase();
        if super::model::variable_kind(&collection).is_none() {
            return Err((LoadErrorKind::UnsupportedVariable, format!("variable \"{collection}\"")));
        }
        let mut selector = None;
        if i < bytes.len() && bytes[i] == b':' {
            i += 1;
            let start = i;
            if collection == "XML" {
                while i < bytes.len() && bytes[i] != b'|' {
                    i += 1;
                }
                selector = Some(Selector::XPath(text[start..i].to_string()));
            } else if bytes.get(i) == Some(&b'/') {
                i += 1;
                while i < bytes.len() && bytes[i] != b'/' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Err(syntax(format!("unterminated regex selector in \"{text}\"")));
                }
                let re = super::operators::regex(&format!("(?i){}", &text[start + 1..i]))
                    .map_err(|e| (LoadErrorKind::UnsupportedRegex, format!("selector: {e}")))?;
                i += 1;
                selector = Some(Selector::Regex(re));
            } else if bytes.get(i) == Some(&b'\'') {
                let end =
                    text[i + 1..].find('\'').ok_or_else(|| syntax(format!("unterminated quote in \"{text}\"")))?;
                selector = Some(Selector::Key(text[i + 1..i + 1 + end].to_ascii_lowercase()));
                i += end + 2;
            } else {
                while i < bytes.len() && bytes[i] != b'|' {
                    i += 1;
                }
                selector = Some(Selector::Key(text[start..i].trim().to_ascii_lowercase()));
            }
        }
        if i < bytes.len() && bytes[i] != b'|' {
            return Err(syntax(format!("unexpected text in variables \"{text}\"")));
        }
        i += 1;
        out.push(Target { collection, selector, count, exclude });
    }
    Ok(out)
}

/// Splits `a,b:'x,y',c` at the commas outside single quotes; values lose their quotes.
pub fn split_actions(text: &str) -> Result<Vec<(String, Option<String>)>, ActionError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut value = None;
        if chars.peek() == Some(&':') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'\'') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == '\\' && chars.peek() == Some(&'\'') {
                        v.push('\'');
                        chars.next();
                    } else if c == '\'' {
                        closed = true;
                        break;
                    } else {
                        v.push(c);
                    }
                }
                if !closed {
                    return Err((LoadErrorKind::Syntax, format!("unterminated quote in action {}", name.trim())));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
            }
            value = Some(v.trim_end().to_string());
        }
        out.push((name.trim().to_string(), value));
    }
    Ok(out)
}

/// Actions accepted that change nothing this engine decides (logging and audit details,
/// metadata, persistent-collection bookkeeping).
const NO_EFFECT: &[&str] = &[
    "auditlog",
    "noauditlog",
    "rev",
    "maturity",
    "accuracy",
    "expirevar",
    "initcol",
    "setenv",
    "sanitisematched",
    "sanitisearg",
    "sanitiserequestheader",
    "sanitisematchedbytes",
];

pub fn parse_actions(text: &str) -> Result<Actions, ActionError> {
    let mut a = Actions::default();
    for (name, value) in split_actions(text)? {
        let lower = name.to_ascii_lowercase();
        let need = || value.clone().ok_or((LoadErrorKind::Syntax, format!("action \"{name}\" needs a value")));
        let invalid = |what: &str| {
            (LoadErrorKind::InvalidValue, format!("invalid {what} \"{}\"", value.clone().unwrap_or_default()))
        };
        match lower.as_str() {
            "id" => a.id = Some(need()?.parse().map_err(|_| invalid("id"))?),
            "phase" => a.phase = Some(Phase::parse(&need()?).ok_or_else(|| invalid("phase"))?),
            "chain" => a.chain = true,
            "pass" => a.disruptive = Some(Disruptive::Pass),
            "block" => a.disruptive = Some(Disruptive::Block),
            "deny" => a.disruptive = Some(Disruptive::Deny),
            "drop" => a.disruptive = Some(Disruptive::Drop),
            "allow" => a.disruptive = Some(Disruptive::Allow),
            "redirect" => a.disruptive = Some(Disruptive::Redirect),
            "status" => {
                a.status =
                    Some(need()?.parse().ok().filter(|s| (100..=599).contains(s)).ok_or_else(|| invalid("status"))?)
            }
            "skipafter" => a.skip_after = Some(need()?),
            "skip" => a.skip = Some(need()?.parse().map_err(|_| invalid("skip"))?),
            "t" => match lookup(&need()?) {
                Lookup::None => {
                    a.transforms_reset = true;
                    a.transforms.clear();
                }
                Lookup::Transform(t) => a.transforms.push(t),
                Lookup::Unknown => return Err((LoadErrorKind::UnsupportedTransform, format!("t:{}", need()?))),
            },
            "setvar" => a.setvars.push(parse_setvar(&need()?)?),
            "ctl" => a.ctls.push(parse_ctl(&need()?)?),
            "capture" => a.capture = true,
            "multimatch" => a.multi_match = true,
            "log" => a.log = Some(true),
            "nolog" => a.log = Some(false),
            "msg" => a.msg = Some(need()?),
            "logdata" => a.logdata = Some(need()?),
            "tag" => a.tags.push(need()?),
            "severity" => a.severity = Some(severity(&need()?).ok_or_else(|| invalid("severity"))?),
            "ver" => a.ver = Some(need()?),
            n if NO_EFFECT.contains(&n) => {}
            _ => return Err((LoadErrorKind::UnsupportedAction, format!("action \"{name}\""))),
        }
    }
    Ok(a)
}

fn severity(s: &str) -> Option<u8> {
    const NAMES: [&str; 8] = ["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"];
    s.parse::<u8>()
        .ok()
        .filter(|&n| n < 8)
        .or_else(|| NAMES.iter().position(|n| n.eq_ignore_ascii_case(s)).map(|p| p as u8))
}

pub fn parse_setvar(text: &str) -> Result<SetVar, ActionError> {
    let bad = || (LoadErrorKind::InvalidValue, format!("invalid setvar \"{text}\""));
    let (deleted, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    let (collection, key) = name.split_once('.').ok_or_else(bad)?;
    let (collection, key) = (collection.trim().to_ascii_lowercase(), key.trim().to_string());
    if key.is_empty() {
        return Err(bad());
    }
    Ok(match (deleted, value) {
        (true, None) => SetVar::Delete { collection, key },
        (true, Some(_)) => return Err(bad()),
        (false, None) => SetVar::Assign { collection, key, value: "1".into() },
        (false, Some(v)) => match v.as_bytes().first() {
            Some(b'+') => SetVar::Add { collection, key, value: v[1..].to_string(), negative: false },
            Some(b'-') => SetVar::Add { collection, key, value: v[1..].to_string(), negative: true },
            _ => SetVar::Assign { collection, key, value: v.to_string() },
        },
    })
}

/// `920350` or `920350-920360`, space or comma separated.
pub fn parse_id_ranges(text: &str) -> Option<Vec<(u32, u32)>> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => part.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

const CTL_NO_EFFECT: &[&str] = &[
    "auditengine",
    "auditlogparts",
    "forcerequestbodyvariable",
    "requestbodyaccess",
    "requestbodylimit",
    "responsebodyaccess",
    "debugloglevel",
];

pub fn parse_ctl(text: &str) -> Result<Ctl, ActionError> {
    let bad = |what: &str| (LoadErrorKind::InvalidValue, format!("invalid ctl:{text} ({what})"));
    let (name, value) = text.split_once('=').ok_or_else(|| bad("no ="))?;
    let target = |t: &str| -> Result<Target, ActionError> {
        let mut list = parse_targets(t)?;
        if list.len() != 1 {
            return Err(bad("one target expected"));
        }
        Ok(list.remove(0))
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "ruleengine" => Ctl::RuleEngine(match value.to_ascii_lowercase().as_str() {
            "on" => EngineMode::On,
            "off" => EngineMode::Off,
            "detectiononly" => EngineMode::DetectionOnly,
            _ => return Err(bad("On, Off or DetectionOnly")),
        }),
        "ruleremovebyid" => Ctl::RuleRemoveById(parse_id_ranges(value).ok_or_else(|| bad("ids"))?),
        "ruleremovebytag" => Ctl::RuleRemoveByTag(value.to_string()),
        "ruleremovetargetbyid" => {
            let (ids, t) = value.split_once(';').ok_or_else(|| bad("id;TARGET"))?;
            Ctl::RuleRemoveTargetById(parse_id_ranges(ids).ok_or_else(|| bad("ids"))?, target(t)?)
        }
        "ruleremovetargetbytag" => {
            let (tag, t) = value.split_once(';').ok_or_else(|| bad("tag;TARGET"))?;
            Ctl::RuleRemoveTargetByTag(tag.to_string(), target(t)?)
        }
        "requestbodyprocessor" => Ctl::RequestBodyProcessor(value.to_ascii_uppercase()),
        n if CTL_NO_EFFECT.contains(&n) => Ctl::NoEffect(n.to_string()),
        _ => return Err((LoadErrorKind::UnsupportedAction, format!("ctl:{name}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_with_selectors_counts_exclusions() {
        let t =
            parse_targets(r"ARGS|!ARGS:/^json\.|x/|&TX:Foo|REQUEST_HEADERS:User-Agent|XML:/*|!REQUEST_COOKIES:'a b'")
                .unwrap();
        assert_eq!(t.len(), 6);
        assert!(t[1].exclude);
        assert!(matches!(&t[1].selector, Some(Selector::Regex(re)) if re.is_match(b"JSON.a") && re.is_match(b"x")));
        assert!(t[2].count && matches!(&t[2].selector, Some(Selector::Key(k)) if k == "foo"));
        assert!(matches!(&t[3].selector, Some(Selector::Key(k)) if k == "user-agent"));
        assert!(matches!(&t[4].selector, Some(Selector::XPath(p)) if p == "/*"));
        assert!(matches!(&t[5].selector, Some(Selector::Key(k)) if k == "a b"));
        assert_eq!(parse_targets("NOPE").unwrap_err().0, LoadErrorKind::UnsupportedVariable);
        assert_eq!(parse_targets("ARGS:/x").unwrap_err().0, LoadErrorKind::Syntax);
    }

    #[test]
    fn actions_quoted_values_and_kinds() {
        let a = parse_actions("id:942100, phase:2,block,capture,t:none,t:urlDecodeUni,msg:'SQL, really',tag:'a',tag:b,severity:'CRITICAL',multiMatch,setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}',skipAfter:END,chain,nolog,ver:'X',logdata:'%{TX.0}'").unwrap();
        assert_eq!(a.id, Some(942100));
        assert_eq!(a.phase, Some(Phase::RequestBody));
        assert_eq!(a.disruptive, Some(Disruptive::Block));
        assert!(a.capture && a.multi_match && a.chain && a.transforms_reset);
        assert_eq!(a.transforms.len(), 1);
        assert_eq!(a.msg.as_deref(), Some("SQL, really"));
        assert_eq!(a.tags, vec!["a", "b"]);
        assert_eq!(a.severity, Some(2));
        assert_eq!(a.skip_after.as_deref(), Some("END"));
        assert_eq!(a.log, Some(false));
        assert_eq!(
            a.setvars[0],
            SetVar::Add {
                collection: "tx".into(),
                key: "anomaly_score_pl1".into(),
                value: "%{tx.critical_anomaly_score}".into(),
                negative: false
            }
        );
        assert_eq!(parse_actions("id:x").unwrap_err().0, LoadErrorKind::InvalidValue);
        assert_eq!(parse_actions("phase:9").unwrap_err().0, LoadErrorKind::InvalidValue);
        assert_eq!(parse_actions("exec:/bin/sh").unwrap_err().0, LoadErrorKind::UnsupportedAction);
        assert_eq!(parse_actions("t:md5").unwrap_err().0, LoadErrorKind::UnsupportedTransform);
        assert_eq!(parse_actions("msg:'open").unwrap_err().0, LoadErrorKind::Syntax);
    }

    #[test]
    fn setvar_forms() {
        assert_eq!(
            parse_setvar("tx.a=5").unwrap(),
            SetVar::Assign { collection: "tx".into(), key: "a".into(), value: "5".into() }
        );
        assert_eq!(
            parse_setvar("TX.a=-2").unwrap(),
            SetVar::Add { collection: "tx".into(), key: "a".into(), value: "2".into(), negative: true }
        );
        assert_eq!(parse_setvar("!tx.a").unwrap(), SetVar::Delete { collection: "tx".into(), key: "a".into() });
        assert_eq!(
            parse_setvar("tx.flag").unwrap(),
            SetVar::Assign { collection: "tx".into(), key: "flag".into(), value: "1".into() }
        );
        assert!(parse_setvar("nodot=1").is_err());
    }

    #[test]
    fn ctl_forms() {
        assert!(matches!(parse_ctl("ruleEngine=Off").unwrap(), Ctl::RuleEngine(EngineMode::Off)));
        assert!(
            matches!(parse_ctl("ruleRemoveById=920350 1-5").unwrap(), Ctl::RuleRemoveById(v) if v == [(920350, 920350), (1, 5)])
        );
        assert!(
            matches!(parse_ctl("ruleRemoveTargetById=942100;ARGS:pwd").unwrap(), Ctl::RuleRemoveTargetById(ids, t) if ids == [(942100, 942100)] && t.collection == "ARGS")
        );
        assert!(
            matches!(parse_ctl("ruleRemoveTargetByTag=OWASP_CRS;ARGS:json.content").unwrap(), Ctl::RuleRemoveTargetByTag(tag, _) if tag == "OWASP_CRS")
        );
        assert!(matches!(parse_ctl("auditLogParts=+E").unwrap(), Ctl::NoEffect(_)));
        assert_eq!(parse_ctl("hashEngine=On").unwrap_err().0, LoadErrorKind::UnsupportedAction);
    }
}
