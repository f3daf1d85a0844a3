using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Hosting;

/// <summary>The host reached through its files under a host root, with no daemon involved.</summary>
public sealed class OfflineHost : IKvmHost
{
    private readonly OfflinePoolStore pools;

    public OfflineHost(HostPaths paths)
    {
        Paths = paths;
        Name = "offline:" + paths.Root;
        pools = new OfflinePoolStore(paths, Name);
    }

    public string Name { get; }

    public HostPaths Paths { get; }

    /// <summary>The host of the current session: <c>KVMSTORAGE_ROOT</c>, else <c>/</c>.</summary>
    public static OfflineHost FromEnvironment() => new(HostPaths.FromEnvironment());

    public IReadOnlyList<PoolReadResult> ListPools() => pools.ReadAll();

    public StoragePool GetPool(string name) => pools.Get(name);

    public StoragePool DefinePool(PoolDefinition definition, PoolDefineOptions options) => pools.Define(definition, options);

    public StoragePool UpdatePool(string name, Action<PoolDefinition> change, bool? autostart) => pools.Update(name, change, autostart);

    public void UndefinePool(string name, bool deleteTarget) => pools.Undefine(name, deleteTarget);
}
