using KvmStorage.Core.Domains;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Hosting;

/// <summary>
/// A KVM host as the cmdlets see it. The offline implementation edits libvirt's files under a host root;
/// a live one talks to a running libvirt daemon. Cmdlets never know which they hold.
/// </summary>
public interface IKvmHost
{
    /// <summary>A name for messages and for the objects' HostName: <c>offline:/srv/root</c> or a libvirt URI.</summary>
    string Name { get; }

    HostPaths Paths { get; }

    IReadOnlyList<PoolReadResult> ListPools();

    StoragePool GetPool(string name);

    StoragePool DefinePool(PoolDefinition definition, PoolDefineOptions options);

    StoragePool UpdatePool(string name, Action<PoolDefinition> change, bool? autostart);

    void UndefinePool(string name, bool deleteTarget);

    IReadOnlyList<VolumeReadResult> ListVolumes(string pool);

    StorageVolume GetVolume(string pool, string name);

    /// <summary>An image file anywhere, given by its path on this machine (under the host root or not).</summary>
    StorageVolume GetVolumeByPath(string localPath);

    StorageVolume CreateVolume(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken);

    void RemoveVolume(string pool, string name, bool force);

    StorageVolume ResizeVolume(string pool, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken);

    /// <summary>Every domain definition; an unreadable one is an entry with its error.</summary>
    IReadOnlyList<DomainFileEntry> ListDomains();

    DomainDefinition GetDomain(string name);

    /// <summary>Locks, re-reads, changes and saves one domain's persistent definition.</summary>
    T EditDomain<T>(string name, Func<DomainDefinition, T> edit);

    /// <summary>True when the domain has a running (or paused) QEMU process.</summary>
    bool IsDomainActive(string name);
}
