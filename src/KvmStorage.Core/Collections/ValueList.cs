using System.Collections;

namespace KvmStorage.Core.Collections;

/// <summary>
/// A read-only list the objects the module emits carry (a volume's chain, its snapshots, the VMs using it): exported
/// with ConvertTo-Json it is an array, and with Export-Csv (which writes a value's ToString()) it is its items joined
/// by ", " rather than a type name.
/// </summary>
public sealed class ValueList<T> : IReadOnlyList<T>
{
    private readonly T[] items;

    public ValueList(IEnumerable<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        this.items = [.. items];
    }

    public int Count => items.Length;

    public T this[int index] => items[index];

    public IEnumerator<T> GetEnumerator() => ((IEnumerable<T>)items).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => items.GetEnumerator();

    public override string ToString() => string.Join(", ", items);
}

/// <summary>Makes <see cref="ValueList{T}"/>s.</summary>
public static class ValueList
{
    /// <summary>An empty list.</summary>
    public static ValueList<T> Empty<T>() => new([]);

    /// <summary>The items as a <see cref="ValueList{T}"/> (the same list when it is one already).</summary>
    public static ValueList<T> Of<T>(IEnumerable<T>? items) => items switch
    {
        null => new ValueList<T>([]),
        ValueList<T> list => list,
        _ => new ValueList<T>(items),
    };
}
