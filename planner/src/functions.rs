//! The function registry: DataFusion's built-in scalar and aggregate
//! functions, by name and alias.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

#[derive(Debug, Clone)]
pub struct Functions {
    scalars: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
}

impl Default for Functions {
    fn default() -> Self {
        let mut scalars = HashMap::new();
        for f in datafusion::functions::all_default_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                scalars.insert(name.to_lowercase(), f.clone());
            }
        }
        let mut aggregates = HashMap::new();
        for f in datafusion::functions_aggregate::all_default_aggregate_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                aggregates.insert(name.to_lowercase(), f.clone());
            }
        }
        Self {
            scalars,
            aggregates,
        }
    }
}

impl Functions {
    pub fn scalar(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.scalars.get(&name.to_lowercase()).cloned()
    }

    pub fn aggregate(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregates.get(&name.to_lowercase()).cloned()
    }

    /// Every function name, for "did you mean" suggestions.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.scalars
            .keys()
            .chain(self.aggregates.keys())
            .map(String::as_str)
    }
}
