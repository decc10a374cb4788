//! infra/ held to the code, offline.
//!
//! `terraform init` and `validate` need the google provider from a registry
//! this machine cannot reach, so these tests parse every `.tf` file with
//! hcl-rs and check what `validate` would catch and what it cannot know:
//! - every `var.X` is declared, with a type and a description; every output
//!   is described; every `local`, resource, data source, module, module
//!   output, module argument and provider that is referred to exists;
//! - each Cloud Run service's environment in Terraform is exactly the list
//!   its configuration reads (`nbci_shared::config::variables_of`, less what
//!   Cloud Run sets), secrets come from Secret Manager and never pass through
//!   Terraform, only the GitHub webhook is public, no basic role is granted;
//! - the GitHub App manifest asks for the documented permissions and events,
//!   and the images keep the job contract's entrypoint and a non-root user.
//!
//! `make lint-infra` adds `terraform fmt`, checkov and hadolint.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hcl::expr::{Operation, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element};
use hcl::{Block, Body, Expression, ObjectKey, Structure, Template};
use nbci_shared::config::{self, Service};

use super::common::workspace;

/// Variables Cloud Run sets itself: never in Terraform's environment.
const SET_BY_CLOUD_RUN: &[&str] = &["PORT", "K_SERVICE"];

/// The services' module calls in infra/services.tf, by label.
const SERVICES: &[(&str, Service)] = &[
    ("github_webhook", Service::GithubWebhook),
    ("gcs_events", Service::GcsEvents),
    ("scheduler", Service::Scheduler),
];

const SERVICE_MODULE: &str = "./modules/cloud-run-service";

/// One Terraform module: the `.tf` files of one directory, parsed.
struct Module {
    dir: PathBuf,
    files: Vec<(PathBuf, Body)>,
}

impl Module {
    fn load(dir: &Path) -> Module {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "{} has no .tf files", dir.display());
        let files = paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("read .tf file");
                let body =
                    hcl::parse(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                (path, body)
            })
            .collect();
        Module {
            dir: dir.to_path_buf(),
            files,
        }
    }

    /// Top-level blocks of one kind (`variable`, `resource`, ...) with their file.
    fn blocks<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a Path, &'a Block)> + 'a {
        self.files.iter().flat_map(move |(path, body)| {
            body.blocks()
                .filter(move |block| block.identifier.as_str() == kind)
                .map(move |block| (path.as_path(), block))
        })
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(workspace())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn declarations(&self) -> Declarations {
        let mut declared = Declarations::default();
        for (_, block) in self.blocks("variable") {
            declared.variables.insert(label(block, 0), block.clone());
        }
        for (_, block) in self.blocks("output") {
            declared.outputs.insert(label(block, 0));
        }
        for (_, block) in self.blocks("locals") {
            for attribute in block.body.attributes() {
                declared
                    .locals
                    .insert(attribute.key.to_string(), attribute.expr.clone());
            }
        }
        for (_, block) in self.blocks("resource") {
            declared
                .resources
                .insert(format!("{}.{}", label(block, 0), label(block, 1)));
        }
        for (_, block) in self.blocks("data") {
            declared
                .data
                .insert(format!("{}.{}", label(block, 0), label(block, 1)));
        }
        for (_, block) in self.blocks("module") {
            declared.modules.insert(label(block, 0), block.clone());
        }
        for (_, block) in self.blocks("terraform") {
            for providers in block
                .body
                .blocks()
                .filter(|b| b.identifier.as_str() == "required_providers")
            {
                for attribute in providers.body.attributes() {
                    declared.providers.insert(attribute.key.to_string());
                }
            }
        }
        declared
    }
}

/// What one module declares.
#[derive(Default)]
struct Declarations {
    variables: BTreeMap<String, Block>,
    outputs: BTreeSet<String>,
    locals: BTreeMap<String, Expression>,
    resources: BTreeSet<String>,
    data: BTreeSet<String>,
    modules: BTreeMap<String, Block>,
    providers: BTreeSet<String>,
}

fn label(block: &Block, index: usize) -> String {
    block
        .labels
        .get(index)
        .map(|label| label.as_str().to_owned())
        .unwrap_or_else(|| panic!("{} block without label {index}", block.identifier))
}

fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| &attribute.expr)
}

/// A string literal (quoted, or a heredoc without interpolations).
fn literal(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(text) => Some(text.clone()),
        Expression::TemplateExpr(template) => {
            let parsed = Template::from_expr(template).ok()?;
            let mut text = String::new();
            for element in parsed.elements() {
                match element {
                    Element::Literal(part) => text.push_str(part),
                    _ => return None,
                }
            }
            Some(text)
        }
        _ => None,
    }
}

/// The root module and every local module it calls.
fn modules() -> Vec<Module> {
    let infra = workspace().join("infra");
    let root = Module::load(&infra);
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for (_, block) in root.blocks("module") {
        if let Some(source) = attribute(&block.body, "source").and_then(literal)
            && source.starts_with("./")
        {
            dirs.insert(infra.join(source.trim_start_matches("./")));
        }
    }
    let mut all = vec![root];
    all.extend(dirs.iter().map(|dir| Module::load(dir)));
    all
}

/// A name used in an expression: `root` followed by its traversal, where
/// attribute names are `Some` and index or splat steps `None`.
#[derive(Debug)]
struct Reference {
    file: PathBuf,
    root: String,
    steps: Vec<Option<String>>,
}

impl Reference {
    fn describe(&self) -> String {
        let mut text = self.root.clone();
        for step in &self.steps {
            match step {
                Some(name) => {
                    let _ = write!(text, ".{name}");
                }
                None => text.push_str("[…]"),
            }
        }
        text
    }
}

/// Collects the references of expressions, minus names bound by `for`
/// expressions, `dynamic` blocks and template `for` directives.
struct Walker {
    file: PathBuf,
    scope: Vec<String>,
    found: Vec<Reference>,
}

impl Walker {
    fn reference(&mut self, root: &str, operators: &[TraversalOperator]) {
        if self.scope.iter().any(|name| name == root) {
            return;
        }
        let steps = operators
            .iter()
            .map(|operator| match operator {
                TraversalOperator::GetAttr(name) => Some(name.to_string()),
                _ => None,
            })
            .collect();
        self.found.push(Reference {
            file: self.file.clone(),
            root: root.to_owned(),
            steps,
        });
    }

    fn expr(&mut self, expr: &Expression) {
        match expr {
            Expression::Variable(variable) => self.reference(variable.as_str(), &[]),
            Expression::Traversal(traversal) => {
                match &traversal.expr {
                    Expression::Variable(variable) => {
                        self.reference(variable.as_str(), &traversal.operators);
                    }
                    other => self.expr(other),
                }
                for operator in &traversal.operators {
                    if let TraversalOperator::Index(index) = operator {
                        self.expr(index);
                    }
                }
            }
            Expression::Array(items) => items.iter().for_each(|item| self.expr(item)),
            Expression::Object(object) => {
                for (key, value) in object {
                    if let ObjectKey::Expression(key) = key {
                        // A bare or quoted key names itself; only computed keys refer.
                        if !matches!(key, Expression::Variable(_) | Expression::String(_)) {
                            self.expr(key);
                        }
                    }
                    self.expr(value);
                }
            }
            Expression::TemplateExpr(template) => self.template_expr(template),
            Expression::FuncCall(call) => call.args.iter().for_each(|arg| self.expr(arg)),
            Expression::Parenthesis(inner) => self.expr(inner),
            Expression::Conditional(conditional) => {
                self.expr(&conditional.cond_expr);
                self.expr(&conditional.true_expr);
                self.expr(&conditional.false_expr);
            }
            Expression::Operation(operation) => match operation.as_ref() {
                Operation::Unary(unary) => self.expr(&unary.expr),
                Operation::Binary(binary) => {
                    self.expr(&binary.lhs_expr);
                    self.expr(&binary.rhs_expr);
                }
            },
            Expression::ForExpr(for_expr) => {
                self.expr(&for_expr.collection_expr);
                let bound = self.scope.len();
                self.scope
                    .extend(for_expr.key_var.iter().map(ToString::to_string));
                self.scope.push(for_expr.value_var.to_string());
                if let Some(key) = &for_expr.key_expr {
                    self.expr(key);
                }
                self.expr(&for_expr.value_expr);
                if let Some(condition) = &for_expr.cond_expr {
                    self.expr(condition);
                }
                self.scope.truncate(bound);
            }
            _ => {}
        }
    }

    fn template_expr(&mut self, template: &TemplateExpr) {
        let parsed = Template::from_expr(template).unwrap_or_else(|error| {
            panic!("{}: template {template}: {error}", self.file.display())
        });
        self.template(&parsed);
    }

    fn template(&mut self, template: &Template) {
        for element in template.elements() {
            match element {
                Element::Literal(_) => {}
                Element::Interpolation(interpolation) => self.expr(&interpolation.expr),
                Element::Directive(directive) => match directive.as_ref() {
                    Directive::If(directive) => {
                        self.expr(&directive.cond_expr);
                        self.template(&directive.true_template);
                        if let Some(otherwise) = &directive.false_template {
                            self.template(otherwise);
                        }
                    }
                    Directive::For(directive) => {
                        self.expr(&directive.collection_expr);
                        let bound = self.scope.len();
                        self.scope
                            .extend(directive.key_var.iter().map(ToString::to_string));
                        self.scope.push(directive.value_var.to_string());
                        self.template(&directive.template);
                        self.scope.truncate(bound);
                    }
                },
            }
        }
    }

    /// A block's body; `skip` names attributes that hold no references
    /// (types, provider names, lifecycle's ignore_changes).
    fn body(&mut self, body: &Body, skip: &[&str]) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attribute) => {
                    if !skip.contains(&attribute.key.as_str()) {
                        self.expr(&attribute.expr);
                    }
                }
                Structure::Block(block) if block.identifier.as_str() == "dynamic" => {
                    let iterator = attribute(&block.body, "iterator")
                        .and_then(|expr| match expr {
                            Expression::Variable(variable) => Some(variable.to_string()),
                            _ => None,
                        })
                        .unwrap_or_else(|| label(block, 0));
                    if let Some(for_each) = attribute(&block.body, "for_each") {
                        self.expr(for_each);
                    }
                    self.scope.push(iterator);
                    for content in block.body.blocks() {
                        self.body(&content.body, skip);
                    }
                    self.scope.pop();
                }
                Structure::Block(block) if block.identifier.as_str() == "lifecycle" => {
                    self.body(&block.body, &["ignore_changes"]);
                }
                Structure::Block(block) => self.body(&block.body, skip),
            }
        }
    }
}

/// Every reference in a module, with the providers its blocks name.
fn references(module: &Module) -> (Vec<Reference>, Vec<(PathBuf, String)>) {
    let mut found = Vec::new();
    let mut providers = Vec::new();
    for (path, body) in &module.files {
        let mut walker = Walker {
            file: path.clone(),
            scope: Vec::new(),
            found: Vec::new(),
        };
        for block in body.blocks() {
            match block.identifier.as_str() {
                "terraform" => {}
                "variable" => walker.body(&block.body, &["type"]),
                "module" => walker.body(&block.body, &["source", "version", "providers"]),
                _ => walker.body(&block.body, &["provider"]),
            }
            if let Some(Expression::Variable(provider)) = attribute(&block.body, "provider") {
                providers.push((path.clone(), provider.to_string()));
            }
        }
        found.extend(walker.found);
    }
    (found, providers)
}

#[test]
fn every_variable_is_typed_and_described_and_every_output_described() {
    let mut problems = Vec::new();
    for module in modules() {
        for (path, block) in module.blocks("variable") {
            let name = label(block, 0);
            let file = module.relative(path);
            if attribute(&block.body, "type").is_none() {
                problems.push(format!("{file}: variable {name:?} has no type"));
            }
            match attribute(&block.body, "description").and_then(literal) {
                Some(text) if !text.trim().is_empty() => {}
                _ => problems.push(format!("{file}: variable {name:?} has no description")),
            }
            if attribute(&block.body, "sensitive").is_some() {
                problems.push(format!(
                    "{file}: variable {name:?} is sensitive: secrets go to Secret Manager, not through Terraform"
                ));
            }
        }
        for (path, block) in module.blocks("output") {
            let name = label(block, 0);
            match attribute(&block.body, "description").and_then(literal) {
                Some(text) if !text.trim().is_empty() => {}
                _ => problems.push(format!(
                    "{}: output {name:?} has no description",
                    module.relative(path)
                )),
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_reference_resolves() {
    let infra = workspace().join("infra");
    let modules = modules();
    let declared: BTreeMap<PathBuf, Declarations> = modules
        .iter()
        .map(|module| (module.dir.clone(), module.declarations()))
        .collect();
    let mut problems = Vec::new();
    let mut checked = 0usize;
    for module in &modules {
        let here = &declared[&module.dir];
        let (found, providers) = references(module);
        for reference in &found {
            checked += 1;
            let file = module.relative(&reference.file);
            let step = |index: usize| reference.steps.get(index).cloned().flatten();
            let missing = match reference.root.as_str() {
                "var" => step(0)
                    .filter(|name| !here.variables.contains_key(name))
                    .map(|name| format!("variable {name:?} is not declared")),
                "local" => step(0)
                    .filter(|name| !here.locals.contains_key(name))
                    .map(|name| format!("local {name:?} is not declared")),
                "data" => match (step(0), step(1)) {
                    (Some(kind), Some(name)) if here.data.contains(&format!("{kind}.{name}")) => {
                        None
                    }
                    _ => Some("no such data source".to_owned()),
                },
                "module" => match step(0) {
                    Some(name) => match here.modules.get(&name) {
                        None => Some(format!("module {name:?} is not declared")),
                        Some(call) => {
                            let output = reference.steps.iter().skip(1).flatten().next();
                            let source = attribute(&call.body, "source")
                                .and_then(literal)
                                .unwrap_or_default();
                            let child = declared.get(&infra.join(source.trim_start_matches("./")));
                            match (output, child) {
                                (Some(output), Some(child)) if !child.outputs.contains(output) => {
                                    Some(format!(
                                        "module {name:?} ({source}) has no output {output:?}"
                                    ))
                                }
                                _ => None,
                            }
                        }
                    },
                    None => Some("a bare `module`".to_owned()),
                },
                "each" | "count" | "self" | "path" | "terraform" => None,
                kind => match step(0) {
                    Some(name) if here.resources.contains(&format!("{kind}.{name}")) => None,
                    _ => Some("not a declared resource, and no for or dynamic binds it".to_owned()),
                },
            };
            if let Some(why) = missing {
                problems.push(format!("{file}: {}: {why}", reference.describe()));
            }
        }
        for (path, provider) in providers {
            if !here.providers.contains(&provider) {
                problems.push(format!(
                    "{}: provider {provider:?} is not in required_providers",
                    module.relative(&path)
                ));
            }
        }
        // Module calls pass exactly variables the module declares, and every
        // variable without a default.
        for (path, call) in module.blocks("module") {
            let name = label(call, 0);
            let source = attribute(&call.body, "source")
                .and_then(literal)
                .unwrap_or_default();
            let Some(child) = declared.get(&infra.join(source.trim_start_matches("./"))) else {
                continue;
            };
            let meta = [
                "source",
                "version",
                "count",
                "for_each",
                "depends_on",
                "providers",
            ];
            let passed: BTreeSet<String> = call
                .body
                .attributes()
                .map(|attribute| attribute.key.to_string())
                .filter(|key| !meta.contains(&key.as_str()))
                .collect();
            for key in &passed {
                if !child.variables.contains_key(key) {
                    problems.push(format!(
                        "{}: module {name:?} passes {key:?}, which {source} does not declare",
                        module.relative(path)
                    ));
                }
            }
            for (variable, block) in &child.variables {
                if attribute(&block.body, "default").is_none() && !passed.contains(variable) {
                    problems.push(format!(
                        "{}: module {name:?} does not pass {variable:?}, which {source} requires",
                        module.relative(path)
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} references found: is the walker blind?"
    );
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The names of a map-valued argument that Terraform builds from object
/// literals, locals and merge(): evaluated far enough to know its keys.
fn keys_of(
    expr: &Expression,
    locals: &BTreeMap<String, Expression>,
) -> Result<BTreeSet<String>, String> {
    match expr {
        Expression::Object(object) => object
            .keys()
            .map(|key| match key {
                ObjectKey::Identifier(name) => Ok(name.to_string()),
                ObjectKey::Expression(Expression::Variable(name)) => Ok(name.to_string()),
                ObjectKey::Expression(key) => {
                    literal(key).ok_or_else(|| format!("a computed key {key:?}"))
                }
                other => Err(format!("an unknown kind of key {other:?}")),
            })
            .collect(),
        Expression::Traversal(traversal) => match (&traversal.expr, traversal.operators.as_slice())
        {
            (Expression::Variable(root), [TraversalOperator::GetAttr(name)])
                if root.as_str() == "local" =>
            {
                let value = locals
                    .get(name.as_str())
                    .ok_or_else(|| format!("local {name:?} is not declared"))?;
                keys_of(value, locals)
            }
            _ => Err(format!(
                "{traversal:?} cannot be read without evaluating Terraform"
            )),
        },
        Expression::FuncCall(call) if call.name.name.as_str() == "merge" => {
            let mut keys = BTreeSet::new();
            for arg in &call.args {
                keys.extend(keys_of(arg, locals)?);
            }
            Ok(keys)
        }
        Expression::Parenthesis(inner) => keys_of(inner, locals),
        other => Err(format!(
            "{other:?} cannot be read without evaluating Terraform"
        )),
    }
}

/// Each service's environment in Terraform: (plain names, Secret Manager names).
fn service_environments() -> BTreeMap<&'static str, (BTreeSet<String>, BTreeSet<String>)> {
    let root = Module::load(&workspace().join("infra"));
    let declared = root.declarations();
    let calls: BTreeMap<String, &Block> = root
        .blocks("module")
        .filter(|(_, block)| {
            attribute(&block.body, "source")
                .and_then(literal)
                .as_deref()
                == Some(SERVICE_MODULE)
        })
        .map(|(_, block)| (label(block, 0), block))
        .collect();
    let expected: BTreeSet<String> = SERVICES
        .iter()
        .map(|(label, _)| (*label).to_owned())
        .collect();
    assert_eq!(
        calls.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "infra/ calls {SERVICE_MODULE} once per service, labelled as the services"
    );
    SERVICES
        .iter()
        .map(|(label, _)| {
            let call = calls[*label];
            let read = |argument: &str| match attribute(&call.body, argument) {
                None => BTreeSet::new(),
                Some(expr) => keys_of(expr, &declared.locals)
                    .unwrap_or_else(|why| panic!("module {label:?}, {argument}: {why}")),
            };
            (*label, (read("env"), read("secret_env")))
        })
        .collect()
}

#[test]
fn each_service_environment_is_exactly_what_its_configuration_reads() {
    let environments = service_environments();
    let mut report = String::new();
    for (label, service) in SERVICES {
        let (plain, secret) = &environments[label];
        let both: BTreeSet<&String> = plain.intersection(secret).collect();
        if !both.is_empty() {
            let _ = writeln!(
                report,
                "{}: set both plainly and from Secret Manager: {both:?}",
                service.name()
            );
        }
        let in_terraform: BTreeSet<&str> = plain.union(secret).map(String::as_str).collect();
        let read: BTreeSet<&str> = config::variables_of(*service)
            .map(|variable| variable.name)
            .filter(|name| !SET_BY_CLOUD_RUN.contains(name))
            .collect();
        let unset: Vec<&str> = read.difference(&in_terraform).copied().collect();
        let unread: Vec<&str> = in_terraform.difference(&read).copied().collect();
        if unset.is_empty() && unread.is_empty() {
            continue;
        }
        let _ = writeln!(
            report,
            "{} (module \"{label}\" in infra/services.tf) != nbci_shared::config::variables_of(Service::{service:?}) less {SET_BY_CLOUD_RUN:?}:",
            service.name()
        );
        if !unset.is_empty() {
            let _ = writeln!(
                report,
                "  read by the service, not set by Terraform:  {}",
                unset.join(", ")
            );
        }
        if !unread.is_empty() {
            let _ = writeln!(
                report,
                "  set by Terraform, not read by the service:  {}",
                unread.join(", ")
            );
        }
    }
    assert!(
        report.is_empty(),
        "\nEach service's Terraform environment must be exactly the variables its configuration reads.\n\
         Declare what a service reads in shared/src/config.rs (VARIABLES, its `services`), and set it in\n\
         infra/services.tf (`env`, or `secret_env` for secrets; \"\" leaves it unset so its default applies).\n\n{report}"
    );
}

#[test]
fn secrets_come_from_secret_manager_and_never_pass_through_terraform() {
    let environments = service_environments();
    let mut problems = Vec::new();
    for variable in config::VARIABLES {
        for (label, (plain, secret)) in &environments {
            if variable.secret && plain.contains(variable.name) {
                problems.push(format!(
                    "{label}: {} is a secret: set it in secret_env (Secret Manager), not env",
                    variable.name
                ));
            }
            if !variable.secret && secret.contains(variable.name) {
                problems.push(format!(
                    "{label}: {} is not a secret: set it in env",
                    variable.name
                ));
            }
        }
    }
    // Secret values are added with `gcloud secrets versions add`, never in
    // Terraform: no version resources, data sources or outputs of them.
    for module in modules() {
        for kind in ["resource", "data"] {
            for (path, block) in module.blocks(kind) {
                if label(block, 0) == "google_secret_manager_secret_version" {
                    problems.push(format!(
                        "{}: a {kind} google_secret_manager_secret_version puts a secret's value in the state",
                        module.relative(path)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Every string literal in a module (and templates without interpolations), with its file.
fn strings(module: &Module) -> Vec<(String, String)> {
    fn walk_expr(expr: &Expression, out: &mut Vec<String>) {
        match expr {
            Expression::String(_) | Expression::TemplateExpr(_) => out.extend(literal(expr)),
            Expression::Array(items) => items.iter().for_each(|item| walk_expr(item, out)),
            Expression::Object(object) => object.values().for_each(|value| walk_expr(value, out)),
            Expression::FuncCall(call) => call.args.iter().for_each(|arg| walk_expr(arg, out)),
            Expression::Conditional(conditional) => {
                walk_expr(&conditional.true_expr, out);
                walk_expr(&conditional.false_expr, out);
            }
            Expression::Parenthesis(inner) => walk_expr(inner, out),
            _ => {}
        }
    }
    fn walk_body(body: &Body, out: &mut Vec<String>) {
        for attribute in body.attributes() {
            walk_expr(&attribute.expr, out);
        }
        for block in body.blocks() {
            walk_body(&block.body, out);
        }
    }
    let mut found = Vec::new();
    for (path, parsed) in &module.files {
        let mut out = Vec::new();
        walk_body(parsed, &mut out);
        found.extend(out.into_iter().map(|text| (module.relative(path), text)));
    }
    found
}

#[test]
fn only_the_github_webhook_is_public_and_no_basic_role_is_granted() {
    let mut problems = Vec::new();
    for module in modules() {
        for (file, text) in strings(&module) {
            if ["roles/owner", "roles/editor", "roles/viewer"].contains(&text.as_str()) {
                problems.push(format!("{file}: basic role {text}"));
            }
            if text == "allAuthenticatedUsers" {
                problems.push(format!("{file}: allAuthenticatedUsers"));
            }
            if text == "allUsers" && !file.ends_with("modules/cloud-run-service/main.tf") {
                problems.push(format!(
                    "{file}: allUsers outside the service module's `public` switch"
                ));
            }
        }
    }
    let root = Module::load(&workspace().join("infra"));
    for (path, call) in root.blocks("module") {
        let public = matches!(
            attribute(&call.body, "public"),
            Some(Expression::Bool(true))
        );
        let name = label(call, 0);
        if public != (name == "github_webhook") {
            problems.push(format!(
                "{}: module {name:?} has public = {public}; only github_webhook may be public",
                root.relative(path)
            ));
        }
        let ingress = attribute(&call.body, "ingress").and_then(literal);
        if name != "github_webhook" && ingress.as_deref() != Some("INGRESS_TRAFFIC_INTERNAL_ONLY") {
            problems.push(format!(
                "{}: module {name:?} is reachable from the internet ({ingress:?})",
                root.relative(path)
            ));
        }
    }
    for (path, bucket) in root
        .blocks("resource")
        .filter(|(_, b)| label(b, 0) == "google_storage_bucket")
    {
        if attribute(&bucket.body, "public_access_prevention")
            .and_then(literal)
            .as_deref()
            != Some("enforced")
        {
            problems.push(format!(
                "{}: a bucket without public access prevention",
                root.relative(path)
            ));
        }
        if !matches!(
            attribute(&bucket.body, "uniform_bucket_level_access"),
            Some(Expression::Bool(true))
        ) {
            problems.push(format!(
                "{}: a bucket without uniform access",
                root.relative(path)
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn github_app_manifest_asks_for_the_documented_permissions_and_events() {
    let path = workspace().join("infra/github-app/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read manifest"))
            .expect("manifest is JSON");
    assert_eq!(
        manifest["default_permissions"],
        serde_json::json!({"checks": "write", "contents": "read", "pull_requests": "read", "metadata": "read"}),
    );
    let events: BTreeSet<&str> = manifest["default_events"]
        .as_array()
        .expect("default_events")
        .iter()
        .map(|event| event.as_str().expect("event name"))
        .collect();
    assert_eq!(
        events,
        BTreeSet::from(["check_suite", "check_run", "pull_request", "push"])
    );
    assert_eq!(manifest["hook_attributes"]["active"], true);
    assert_eq!(manifest["public"], false, "the App is private to its owner");
    // register.py fills the URL from the Terraform output of that name.
    let outputs = Module::load(&workspace().join("infra"))
        .declarations()
        .outputs;
    assert!(outputs.contains("github_webhook_url"));
    assert!(outputs.contains("secrets"));
}

#[test]
fn images_keep_the_job_contract_and_run_as_non_root() {
    let root = workspace();
    let mut dockerfiles = vec![("nbci".to_owned(), root.join("cli/Dockerfile"))];
    for entry in std::fs::read_dir(root.join("functions")).expect("functions/") {
        let dir = entry.expect("entry").path();
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        dockerfiles.push((name, dir.join("Dockerfile")));
    }
    for (binary, path) in dockerfiles {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "{}: {error} (every function has a Dockerfile)",
                path.display()
            )
        });
        let last = |instruction: &str| {
            text.lines()
                .rfind(|line| line.starts_with(instruction))
                .map(|line| line[instruction.len()..].trim().to_owned())
        };
        let entrypoint = last("ENTRYPOINT ").unwrap_or_default();
        assert!(
            entrypoint.starts_with('[') && entrypoint.ends_with(&format!("/{binary}\"]")),
            "{}: ENTRYPOINT must be the exec form of {binary}, got {entrypoint:?}",
            path.display()
        );
        // The job's arguments are exactly ["runner", "gs://..."]: no CMD adds to them.
        assert!(last("CMD ").is_none(), "{}: no CMD", path.display());
        let user = last("USER ").unwrap_or_default();
        let uid = user.split(':').next().unwrap_or_default();
        assert!(
            uid.parse::<u32>().is_ok_and(|uid| uid > 0),
            "{}: the last USER must be a numeric non-root uid, got {user:?}",
            path.display()
        );
        assert!(
            text.contains("--locked") && text.contains("--release"),
            "{}: a locked release build",
            path.display()
        );
    }
}
