"""Router: matches each leader trade to its followers' subscriptions and emits one RoutedTrade."""
