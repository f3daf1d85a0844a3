namespace KvmStorage.Core.Images.Block;

/// <summary>
/// A thread-safe cache of metadata tables, bounded by a byte budget. When the budget is spent the cache
/// starts over: readers walk tables mostly in order, so an LRU would buy little for its bookkeeping.
/// </summary>
internal sealed class BoundedCache<T>
    where T : class
{
    private readonly Dictionary<ulong, T> items = [];
    private readonly object gate = new();
    private readonly int maxItems;

    public BoundedCache(long budgetBytes, long itemBytes)
    {
        maxItems = (int)Math.Clamp(budgetBytes / Math.Max(1, itemBytes), 4, 1 << 20);
    }

    public T GetOrLoad(ulong key, Func<ulong, T> load)
    {
        lock (gate)
        {
            if (items.TryGetValue(key, out T? found))
            {
                return found;
            }
        }

        // Loaded outside the lock so that other threads keep reading; a duplicate load is harmless.
        T value = load(key);
        lock (gate)
        {
            if (items.Count >= maxItems)
            {
                items.Clear();
            }

            items[key] = value;
        }

        return value;
    }
}
