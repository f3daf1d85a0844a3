using KvmStorage.Core.Domains;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Backends;

/// <summary>
/// A KVM host as the cmdlets see it: the contract both backends implement, and the floor they stand on. The offline
/// implementation (<c>Backends/Offline</c>) edits libvirt's files under a host root; the live one
/// (<c>Backends/Live</c>) talks to a running libvirt daemon. Cmdlets never know which they hold.
/// </summary>
public interface IKvmHost
{
    /// <summary>A name for messages and for the objects' HostName: <c>offline:/srv/root</c> or a libvirt URI.</summary>
    string Name { get; }

    HostPaths Paths { get; }

    /// <summary>
    /// True when the host's files are this machine's (offline always; live when the daemon runs here), so the native
    /// engine may read, lock and write its images itself. A remote host's files are reached through libvirt only: a
    /// local file at the same path says nothing about them.
    /// </summary>
    bool IsLocal { get; }

    /// <summary>
    /// Refuses (before anything is written) a change the connection may not make: image files the native engine
    /// writes itself (snapshots, rebase, merge, conversion, repair) bypass libvirt's own read-only check.
    /// </summary>
    void EnsureWritable(string what, string target);

    /// <summary>
    /// After the native engine changed a file in <paramref name="pool"/>: lets a libvirt daemon list it (it caches
    /// pool contents). A failed refresh is reported as <c>PoolRefreshFailed</c> starting with <paramref name="done"/>.
    /// </summary>
    void RefreshAfterWrite(string pool, string done);

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

    /// <summary>
    /// The running VM's definition (libvirt's live XML), or null when it does not run or the backend cannot see it
    /// (offline). Disks hot-plugged or unplugged with -Live differ from the persistent definition.
    /// </summary>
    DomainDefinition? GetLiveDomain(string name);

    /// <summary>Locks, re-reads, changes and saves one domain's persistent definition.</summary>
    T EditDomain<T>(string name, Func<DomainDefinition, T> edit);

    /// <summary>True when the domain has a running (or paused) QEMU process.</summary>
    bool IsDomainActive(string name);

    /// <summary>Starts (activates) a pool; with <paramref name="build"/> its storage is built first.</summary>
    StoragePool StartPool(string name, bool build);

    /// <summary>Stops (deactivates) a pool; its data is untouched.</summary>
    StoragePool StopPool(string name);

    /// <summary>Makes the host re-read the pool's volumes and space.</summary>
    StoragePool RefreshPool(string name);

    /// <summary>Adds a disk (built from <paramref name="spec"/>, next free target when none is given) to a domain.</summary>
    DomainDisk AttachDisk(string vmName, DiskSpec spec, DeviceScope scope);

    /// <summary>Changes settings of one disk.</summary>
    DomainDisk UpdateDisk(string vmName, string target, DiskUpdate update, DeviceScope scope);

    /// <summary>Inserts, changes or (null) ejects the medium of a cdrom or floppy drive.</summary>
    DomainDisk ChangeDiskMedia(string vmName, string target, string? sourcePath, string? format, DeviceScope scope);

    /// <summary>
    /// Detaches a disk and returns what it was. A live detach is asynchronous (the guest must release the disk):
    /// the backend waits up to <paramref name="liveTimeout"/> and reports when the disk is still there.
    /// </summary>
    DomainDisk DetachDisk(string vmName, string target, DeviceScope scope, TimeSpan liveTimeout);

    /// <summary>The host's libvirt secrets (their definitions; values are never read).</summary>
    IReadOnlyList<Secrets.VolumeSecret> ListSecrets();

    /// <summary>
    /// Defines a private, persistent secret whose usage is the volume at host path <paramref name="volumePath"/>,
    /// with <paramref name="value"/> as its value (<c>SecretExists</c> when the volume or the UUID has one).
    /// </summary>
    Secrets.VolumeSecret DefineVolumeSecret(string volumePath, ImagePassphrase value, Guid? uuid, string? description);

    /// <summary>Undefines a secret (<c>SecretNotFound</c> when there is none with the UUID).</summary>
    void RemoveSecret(Guid uuid);
}
