using KvmStorage.Core.Domains;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Hosting;

/// <summary>The host reached through its files under a host root, with no daemon involved.</summary>
public sealed class OfflineHost : IKvmHost
{
    private readonly OfflinePoolStore pools;
    private readonly OfflineVolumeStore volumes;
    private readonly DomainStore domains;

    public OfflineHost(HostPaths paths)
    {
        Paths = paths;
        Name = "offline:" + paths.Root;
        pools = new OfflinePoolStore(paths, Name);
        volumes = new OfflineVolumeStore(this);
        domains = new DomainStore(paths);
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

    public IReadOnlyList<VolumeReadResult> ListVolumes(string pool) => volumes.List(pool);

    public StorageVolume GetVolume(string pool, string name) => volumes.Get(pool, name);

    public StorageVolume GetVolumeByPath(string localPath) => volumes.GetByPath(localPath);

    public StorageVolume CreateVolume(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        volumes.Create(request, progress, cancellationToken);

    public void RemoveVolume(string pool, string name, bool force) => volumes.Remove(pool, name, force);

    public StorageVolume ResizeVolume(string pool, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        volumes.Resize(pool, name, newSize, options, progress, cancellationToken);

    public IReadOnlyList<DomainFileEntry> ListDomains() => domains.List();

    public DomainDefinition GetDomain(string name) => domains.Get(name);

    public T EditDomain<T>(string name, Func<DomainDefinition, T> edit) => domains.Edit(name, edit);

    public bool IsDomainActive(string name) => domains.IsActive(name);
}
