using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Backends.Offline;

/// <summary>The host reached through its files under a host root, with no daemon involved.</summary>
public sealed class OfflineHost : IKvmHost
{
    private readonly OfflinePoolStore pools;
    private readonly FileVolumeStore volumes;
    private readonly DomainStore domains;
    private readonly Secrets.OfflineSecretStore secrets;

    public OfflineHost(HostPaths paths)
    {
        Paths = paths;
        Name = "offline:" + paths.Root;
        pools = new OfflinePoolStore(paths, Name);
        volumes = new FileVolumeStore(this);
        domains = new DomainStore(paths);
        secrets = new Secrets.OfflineSecretStore(paths, Name);
    }

    public string Name { get; }

    public HostPaths Paths { get; }

    /// <summary>The files under the root are on this machine by definition.</summary>
    public bool IsLocal => true;

    /// <summary>Offline, the files' own permissions are the only limit.</summary>
    public void EnsureWritable(string what, string target)
    {
    }

    /// <summary>Offline, the files are the listing: nothing to refresh.</summary>
    public void RefreshAfterWrite(string pool, string done)
    {
    }

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

    public IReadOnlyList<Secrets.VolumeSecret> ListSecrets() => secrets.List();

    public Secrets.VolumeSecret DefineVolumeSecret(string volumePath, ImagePassphrase value, Guid? uuid, string? description) =>
        secrets.Define(volumePath, value, uuid, description);

    public void RemoveSecret(Guid uuid) => secrets.Remove(uuid);

    public DomainDefinition GetDomain(string name) => domains.Get(name);

    /// <summary>Offline there is no running VM to ask; libvirt's status files are not a definition to rely on.</summary>
    public DomainDefinition? GetLiveDomain(string name) => null;

    public T EditDomain<T>(string name, Func<DomainDefinition, T> edit) => domains.Edit(name, edit);

    public bool IsDomainActive(string name) => domains.IsActive(name);

    public StoragePool StartPool(string name, bool build) => throw NeedsDaemon($"Starting pool '{name}'", name);

    public StoragePool StopPool(string name) => throw NeedsDaemon($"Stopping pool '{name}'", name);

    /// <summary>Offline, every read already sees the files as they are: refreshing is reading the pool again.</summary>
    public StoragePool RefreshPool(string name) => pools.Get(name);

    public DomainDisk AttachDisk(string vmName, DiskSpec spec, DeviceScope scope)
    {
        RequireConfigOnly(scope, vmName);
        return domains.Edit(vmName, d => new DomainDiskEditor(d).AddDisk(spec));
    }

    public DomainDisk UpdateDisk(string vmName, string target, DiskUpdate update, DeviceScope scope)
    {
        RequireConfigOnly(scope, vmName);
        return domains.Edit(vmName, d => new DomainDiskEditor(d).UpdateDisk(target, update));
    }

    public DomainDisk ChangeDiskMedia(string vmName, string target, string? sourcePath, string? format, DeviceScope scope)
    {
        RequireConfigOnly(scope, vmName);
        return domains.Edit(vmName, d => new DomainDiskEditor(d).ChangeMedia(target, sourcePath, format));
    }

    public DomainDisk DetachDisk(string vmName, string target, DeviceScope scope, TimeSpan liveTimeout)
    {
        RequireConfigOnly(scope, vmName);
        return domains.Edit(vmName, d => new DomainDiskEditor(d).RemoveDisk(target));
    }

    /// <summary>The files hold only the persistent definition; a running VM can be changed through libvirt only.</summary>
    private void RequireConfigOnly(DeviceScope scope, string vmName)
    {
        if (scope.HasFlag(DeviceScope.Live))
        {
            throw new KvmStorageException(
                ErrorKind.NotSupported,
                BackendErrorIds.LiveChangeUnavailable,
                $"The offline backend ({Name}) changes only the persistent definition of '{vmName}'; a change to the running VM needs the libvirt daemon: connect with Connect-LibvirtHost, or omit -Live.",
                vmName);
        }
    }

    private KvmStorageException NeedsDaemon(string what, string name) => new(
        ErrorKind.NotSupported,
        BackendErrorIds.DaemonRequired,
        $"{what} needs a running libvirt daemon; the offline backend ({Name}) only edits files. Start libvirtd and connect with Connect-LibvirtHost.",
        name);
}
