using KvmStorage.Core.Pools;

namespace KvmStorage.Infrastructure;

/// <summary>
/// A pool given by name or as the object <c>Get-StoragePool</c> emits. PowerShell converts either to this type
/// through its constructors, so <c>-Pool default</c> and <c>Get-StoragePool default | …</c> both bind.
/// </summary>
public sealed class PoolReference
{
    public PoolReference(string name)
    {
        Name = name;
    }

    public PoolReference(StoragePool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        Name = pool.Name;
        Pool = pool;
    }

    public string Name { get; }

    /// <summary>The object that was passed, if an object was; it may be stale, so commands re-read by name.</summary>
    public StoragePool? Pool { get; }

    public override string ToString() => Name;
}
