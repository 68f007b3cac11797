//! Attribute macros of the Sluice Rust SDK. Use them through `sluice-sdk`
//! (`#[sluice_sdk::filter]`, `#[sluice_sdk::map]`, `#[sluice_sdk::process]`,
//! `#[sluice_sdk::aggregate]`), which documents them.

#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemFn, LitStr, Path, Token, Type};

/// The contract, `wit/operator.wit`, inlined into each plugin's bindings (the
/// SDK's export macros generate the plugin's world from it).
const WIT: &str = include_str!("../../../../wit/operator.wit");

fn wit_literal() -> LitStr {
    LitStr::new(WIT, proc_macro2::Span::call_site())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Filter,
    Map,
    Process,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Map => "map",
            Kind::Process => "process",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Kind::Filter => "fn(record: &Record) -> Result<bool, Error>",
            Kind::Map => "fn(record: Record) -> Result<Record, Error>",
            Kind::Process => "fn(record: Record, ctx: &mut Context) -> Result<(), Error>",
        }
    }

    fn base_args(self) -> usize {
        match self {
            Kind::Filter | Kind::Map => 1,
            Kind::Process => 2,
        }
    }
}

#[derive(Default)]
struct Args {
    params: Option<Type>,
    init: Option<Path>,
    on_timer: Option<Path>,
    migrate: Option<Path>,
    migrate_if: Option<Path>,
    side_outputs: Option<Vec<LitStr>>,
}

enum Arg {
    Params(Ident, Type),
    Init(Ident, Path),
    OnTimer(Ident, Path),
    Migrate(Ident, Path),
    MigrateIf(Ident, Path),
    SideOutputs(Ident, Vec<LitStr>),
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        match name.to_string().as_str() {
            "params" => Ok(Arg::Params(name, input.parse()?)),
            "init" => Ok(Arg::Init(name, input.parse()?)),
            "on_timer" => Ok(Arg::OnTimer(name, input.parse()?)),
            "migrate" => Ok(Arg::Migrate(name, input.parse()?)),
            "migrate_if" => Ok(Arg::MigrateIf(name, input.parse()?)),
            "side_outputs" => {
                let list: syn::ExprArray = input.parse()?;
                let names = list
                    .elems
                    .iter()
                    .map(|e| match e {
                        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) if !s.value().is_empty() && !s.value().contains(['\n', '.']) => Ok(s.clone()),
                        other => Err(syn::Error::new_spanned(other, "`side_outputs` lists side-output names as string literals (no `.`), e.g. side_outputs = [\"alerts\"]")),
                    })
                    .collect::<syn::Result<Vec<_>>>()?;
                Ok(Arg::SideOutputs(name, names))
            }
            other => Err(syn::Error::new(
                name.span(),
                format!(
                    "unknown argument `{other}`: expected `params = Type`, `init = path::to::fn`, `migrate = path::to::fn`, `migrate_if = path::to::fn`, `side_outputs = [\"name\", ..]` or (for #[process]) `on_timer = path::to::fn`"
                ),
            )),
        }
    }
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args::default();
        for arg in Punctuated::<Arg, Token![,]>::parse_terminated(input)? {
            match arg {
                Arg::Params(_, t) if args.params.is_none() => args.params = Some(t),
                Arg::Init(_, p) if args.init.is_none() => args.init = Some(p),
                Arg::OnTimer(_, p) if args.on_timer.is_none() => args.on_timer = Some(p),
                Arg::Migrate(_, p) if args.migrate.is_none() => args.migrate = Some(p),
                Arg::MigrateIf(_, p) if args.migrate_if.is_none() => args.migrate_if = Some(p),
                Arg::SideOutputs(_, v) if args.side_outputs.is_none() => {
                    args.side_outputs = Some(v)
                }
                Arg::SideOutputs(name, _)
                | Arg::Params(name, _)
                | Arg::Init(name, _)
                | Arg::OnTimer(name, _)
                | Arg::Migrate(name, _)
                | Arg::MigrateIf(name, _) => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("`{name}` given twice"),
                    ))
                }
            }
        }
        Ok(args)
    }
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<Args>(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };
    if let (Some(on_timer), false) = (&args.on_timer, kind == Kind::Process) {
        let err = syn::Error::new_spanned(
            on_timer,
            format!(
                "`on_timer` is only for #[process] (a keyed process operator with timers), not #[{}]",
                kind.name()
            ),
        )
        .to_compile_error();
        let item = TokenStream2::from(item);
        return quote!(#item #err).into();
    }
    if let (Some(migrate_if), None) = (&args.migrate_if, &args.migrate) {
        let err = syn::Error::new_spanned(
            migrate_if,
            "`migrate_if` needs `migrate = path::to::fn`: it only decides whether `migrate` runs",
        )
        .to_compile_error();
        let item = TokenStream2::from(item);
        return quote!(#item #err).into();
    }
    let func = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    match generate(kind, &args, &func) {
        Ok(ts) => ts.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn generate(kind: Kind, args: &Args, func: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    let expected = kind.base_args() + usize::from(args.params.is_some());
    if sig.inputs.len() != expected {
        let with_params = if args.params.is_some() {
            ", plus `&P` last for `params = P`"
        } else {
            ""
        };
        return Err(syn::Error::new(
            sig.inputs.span(),
            format!(
                "#[{}] expects `{}`{with_params}: {expected} argument(s), found {}",
                kind.name(),
                kind.signature(),
                sig.inputs.len()
            ),
        ));
    }
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.span(),
            format!(
                "#[{}] needs a plain, non-async, non-generic function",
                kind.name()
            ),
        ));
    }
    if let Some(syn::FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(
            r.span(),
            format!("#[{}] needs a free function, not a method", kind.name()),
        ));
    }

    let name = &sig.ident;
    let sdk = quote!(::sluice_sdk);
    let params_ty = match &args.params {
        Some(t) => quote!(#t),
        None => quote!(()),
    };
    let params_init = match &args.params {
        Some(t) => quote_spanned!(t.span()=> params.deserialize::<#t>()?),
        None => quote!(()),
    };
    let extra = args.params.as_ref().map(|_| quote!(, &self.params));
    let init_hook = args.init.as_ref().map(|init| {
        quote_spanned! {init.span()=>
            if let ::core::result::Result::Err(e) = #init(params) {
                return ::core::result::Result::Err(::core::convert::From::from(e));
            }
        }
    });
    let body = match kind {
        Kind::Filter => quote! {
            match #name(&record #extra) {
                ::core::result::Result::Ok(true) => {
                    ctx.emit(record);
                    ::core::result::Result::Ok(())
                }
                ::core::result::Result::Ok(false) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
            }
        },
        Kind::Map => quote! {
            match #name(record #extra) {
                ::core::result::Result::Ok(out) => {
                    ctx.emit(out);
                    ::core::result::Result::Ok(())
                }
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
            }
        },
        Kind::Process => quote! {
            match #name(record, ctx #extra) {
                ::core::result::Result::Ok(()) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
            }
        },
    };

    let timers = match &args.on_timer {
        Some(on_timer) => quote_spanned! {on_timer.span()=>
            const TIMERS: bool = true;

            #[inline]
            #[allow(clippy::useless_conversion)]
            fn on_timer(
                &mut self,
                timer: #sdk::Timer,
                ctx: &mut #sdk::Context<'_>,
            ) -> ::core::result::Result<(), #sdk::Error> {
                match #on_timer(timer, ctx #extra) {
                    ::core::result::Result::Ok(()) => ::core::result::Result::Ok(()),
                    ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
                }
            }
        },
        None => quote!(),
    };
    let migration = match &args.migrate {
        Some(migrate) => {
            let needs = match &args.migrate_if {
                Some(migrate_if) => quote_spanned!(migrate_if.span()=> #migrate_if(from)),
                None => quote!({
                    let _ = from;
                    true
                }),
            };
            quote_spanned! {migrate.span()=>
                const MIGRATES: bool = true;

                fn needs_migration(
                    &self,
                    from: &#sdk::PreviousVersion,
                ) -> ::core::result::Result<bool, #sdk::Error> {
                    ::core::result::Result::Ok(#needs)
                }

                #[allow(clippy::useless_conversion)]
                fn migrate(
                    &mut self,
                    key: &[u8],
                    from: &#sdk::PreviousVersion,
                ) -> ::core::result::Result<(), #sdk::Error> {
                    match #migrate(key, from) {
                        ::core::result::Result::Ok(()) => ::core::result::Result::Ok(()),
                        ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
                    }
                }
            }
        }
        None => quote!(),
    };
    let export = match (args.on_timer.is_some(), args.migrate.is_some()) {
        (false, false) => quote!(__export_process_operator),
        (true, false) => quote!(__export_keyed_process_operator),
        (false, true) => quote!(__export_migrating_process_operator),
        (true, true) => quote!(__export_migrating_keyed_process_operator),
    };
    let wit = wit_literal();
    let side_outputs = side_outputs_section(args);

    Ok(quote! {
        #func

        #side_outputs

        #[doc(hidden)]
        pub struct __SluiceOperator {
            #[allow(dead_code)]
            params: #params_ty,
        }

        impl #sdk::__private::Operator for __SluiceOperator {
            #[allow(clippy::useless_conversion)]
            fn init(params: &#sdk::Params) -> ::core::result::Result<Self, #sdk::Error> {
                #init_hook
                ::core::result::Result::Ok(__SluiceOperator { params: #params_init })
            }

            #[inline]
            #[allow(clippy::useless_conversion)]
            fn process(
                &mut self,
                record: #sdk::Record,
                ctx: &mut #sdk::Context<'_>,
            ) -> ::core::result::Result<(), #sdk::Error> {
                #body
            }

            #timers

            #migration
        }

        /// The operator defined by this crate, for `sluice_sdk::testing::Harness`.
        #[doc(hidden)]
        pub fn __sluice_operator() -> #sdk::OperatorDef {
            #sdk::OperatorDef::of::<__SluiceOperator>()
        }

        #sdk::#export!(#wit, __sluice_operator);
    })
}

/// The side outputs a plugin declares, as a custom section of the
/// component (`sluice-side-outputs`: names separated by newlines), so that
/// `sluice validate` can refuse a pipeline that reads one it never emits.
fn side_outputs_section(args: &Args) -> TokenStream2 {
    let Some(names) = &args.side_outputs else {
        return quote!();
    };
    let joined: Vec<String> = names.iter().map(LitStr::value).collect();
    let bytes = joined.join("\n").into_bytes();
    let len = bytes.len();
    let lit = syn::LitByteStr::new(&bytes, proc_macro2::Span::call_site());
    quote! {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[used]
        #[link_section = "sluice-side-outputs"]
        static __SLUICE_SIDE_OUTPUTS: [u8; #len] = *#lit;
    }
}

fn expand_aggregate(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2 = TokenStream2::from(item.clone());
    let result = syn::parse::<Args>(attr).and_then(|args| {
        let item = syn::parse::<Item>(item)?;
        generate_aggregate(&args, &item)
    });
    match result {
        Ok(ts) => quote!(#item2 #ts).into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#item2 #err).into()
        }
    }
}

fn generate_aggregate(args: &Args, item: &Item) -> syn::Result<TokenStream2> {
    if let Some(t) = &args.params {
        return Err(syn::Error::new_spanned(
            t,
            "#[aggregate] takes no `params`: declare `type Params = T;` in the `impl Aggregate` instead",
        ));
    }
    if let Some(p) = &args.on_timer {
        return Err(syn::Error::new_spanned(
            p,
            "`on_timer` is only for #[process], not #[aggregate]",
        ));
    }
    if let Some(p) = args.migrate.as_ref().or(args.migrate_if.as_ref()) {
        return Err(syn::Error::new_spanned(
            p,
            "#[aggregate] has no `migrate` or `migrate_if`: the host keeps window accumulators, so a new version must decode what the old one stored",
        ));
    }
    let ty: TokenStream2 = match item {
        Item::Impl(imp) => {
            if imp.trait_.is_none() {
                return Err(syn::Error::new(
                    imp.span(),
                    "#[aggregate] goes on `impl Aggregate for T` (or on the definition of `T`)",
                ));
            }
            if !imp.generics.params.is_empty() {
                return Err(syn::Error::new(
                    imp.generics.span(),
                    "#[aggregate] needs a concrete, non-generic type",
                ));
            }
            let t = &imp.self_ty;
            quote!(#t)
        }
        Item::Struct(syn::ItemStruct {
            ident, generics, ..
        })
        | Item::Enum(syn::ItemEnum {
            ident, generics, ..
        }) => {
            if !generics.params.is_empty() {
                return Err(syn::Error::new(
                    generics.span(),
                    "#[aggregate] needs a concrete, non-generic type",
                ));
            }
            quote!(#ident)
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                "#[aggregate] goes on `impl Aggregate for T` (or on the struct or enum `T`)",
            ))
        }
    };
    let sdk = quote!(::sluice_sdk);
    let hook = match &args.init {
        Some(init) => quote_spanned! {init.span()=>
            ::core::option::Option::Some({
                #[allow(clippy::useless_conversion)]
                fn __sluice_init(params: &#sdk::Params) -> ::core::result::Result<(), #sdk::Error> {
                    match #init(params) {
                        ::core::result::Result::Ok(()) => ::core::result::Result::Ok(()),
                        ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
                    }
                }
                __sluice_init
            })
        },
        None => quote!(::core::option::Option::None),
    };
    let wit = wit_literal();
    let side_outputs = side_outputs_section(args);
    Ok(quote! {
        #side_outputs

        /// The aggregate defined by this crate, for `sluice_sdk::testing::AggregateHarness`.
        #[doc(hidden)]
        pub fn __sluice_operator() -> #sdk::AggregateDef {
            #sdk::AggregateDef::of::<#ty>(#hook)
        }

        #sdk::__export_window_aggregate!(#wit, __sluice_operator);
    })
}

/// Define a filter operator. See `sluice_sdk::filter`.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, attr, item)
}

/// Define a map operator. See `sluice_sdk::map`.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, attr, item)
}

/// Define a process operator (with `on_timer`, a keyed process operator with
/// timers). See `sluice_sdk::process`.
#[proc_macro_attribute]
pub fn process(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Process, attr, item)
}

/// Export a window aggregate. See `sluice_sdk::aggregate`.
#[proc_macro_attribute]
pub fn aggregate(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_aggregate(attr, item)
}
