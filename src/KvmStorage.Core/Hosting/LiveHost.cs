using System.Globalization;
using System.Xml;
using System.Xml.Linq;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Core.Xml;

namespace KvmStorage.Core.Hosting;

/// <summary>
/// A host reached through a libvirt connection. Pools and domains go through libvirt's API. Volumes of file pools
/// (dir, fs, netfs) on this machine are written by the native image engine (the same <see cref="OfflineVolumeStore"/>
/// the offline backend uses) and the pool is then refreshed so libvirt lists them; volumes of other pools, and of
/// any pool on a remote host, are made by libvirt's volume calls.
/// </summary>
public sealed class LiveHost : IKvmHost, IDisposable
{
    private static readonly TimeSpan DetachPollInterval = TimeSpan.FromMilliseconds(200);

    private readonly OfflineVolumeStore files;

    public LiveHost(LibvirtConnection connection, bool ownsConnection = true)
    {
        ArgumentNullException.ThrowIfNull(connection);
        Connection = connection;
        OwnsConnection = ownsConnection;
        Name = connection.Uri;
        Paths = new HostPaths("/");
        IsLocal = IsLocalUri(connection.Uri);
        files = new OfflineVolumeStore(this);
    }

    public string Name { get; }

    public HostPaths Paths { get; }

    public void EnsureWritable(string what, string target) => RequireWritable(what, target);

    public LibvirtConnection Connection { get; }

    public bool OwnsConnection { get; }

    /// <summary>True when the daemon runs on this machine, so a pool's target path is a local folder.</summary>
    public bool IsLocal { get; }

    /// <summary>
    /// Local when the URI names no server or a loopback one; the test driver's volumes are fake, so it is never
    /// treated as local storage.
    /// </summary>
    public static bool IsLocalUri(string uri)
    {
        if (!System.Uri.TryCreate(uri, UriKind.Absolute, out Uri? parsed) || parsed.Scheme.StartsWith("test", StringComparison.Ordinal))
        {
            return false;
        }

        return parsed.Host.Length == 0 || parsed.IsLoopback;
    }

    public static LiveHost Open(string uri, bool readOnly = false, string? userName = null, string? password = null) =>
        new(LibvirtConnection.Open(uri, readOnly, userName, password));

    public void Dispose()
    {
        if (OwnsConnection)
        {
            Connection.Dispose();
        }
    }

    // ---- Pools ----

    public IReadOnlyList<PoolReadResult> ListPools()
    {
        var results = new List<PoolReadResult>();
        foreach (LibvirtPool pool in Connection.ListPools().OrderBy(p => p.Name, StringComparer.Ordinal))
        {
            using (pool)
            {
                try
                {
                    results.Add(new PoolReadResult(pool.Name, ReadPool(pool), null));
                }
                catch (KvmStorageException ex)
                {
                    results.Add(new PoolReadResult(pool.Name, null, ex));
                }
            }
        }

        return results;
    }

    public StoragePool GetPool(string name)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = Connection.LookupPool(name);
        return ReadPool(pool);
    }

    public StoragePool DefinePool(PoolDefinition definition, PoolDefineOptions options)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(options);
        PoolNames.Validate(definition.Name);
        if (TryLookupPool(definition.Name) is { } existing)
        {
            existing.Dispose();
            throw new KvmStorageException(ErrorKind.AlreadyExists, ErrorIds.PoolExists, $"A pool named '{definition.Name}' already exists on {Name}.", definition.Name);
        }

        // The same refusals as offline, before libvirt sees the XML: its own are less precise (a relative path is
        // "XML error", a path with '..' is accepted, a taken target is "operation failed").
        OfflinePoolStore.ValidateTarget(definition);
        OfflinePoolStore.CheckConflicts(definition, ListPools().Select(r => r.Pool).OfType<StoragePool>());

        using LibvirtPool pool = Connection.DefinePool(definition.Element.ToString(SaveOptions.DisableFormatting), validate: true, definition.Name);
        bool started = false;
        try
        {
            if (options.Build)
            {
                pool.Build();
            }

            if (options.Start)
            {
                pool.Start(0);
                started = true;
            }

            if (options.Autostart)
            {
                pool.Autostart = true;
            }
        }
        catch
        {
            // A failed build or start leaves no definition behind (and no running pool), as offline.
            if (started)
            {
                pool.Stop();
            }

            pool.Undefine();
            throw;
        }

        return ReadPool(pool);
    }

    public StoragePool UpdatePool(string name, Action<PoolDefinition> change, bool? autostart)
    {
        ArgumentNullException.ThrowIfNull(change);
        PoolNames.Validate(name);
        using LibvirtPool pool = Connection.LookupPool(name);
        StoragePool current = ReadPool(pool);
        PoolDefinition edited = current.Definition.Clone();
        change(edited);
        edited.Name = current.Name;

        // Redefining without the UUID makes libvirt generate one and refuse (notes §3.4).
        edited.Uuid = current.Uuid;
        OfflinePoolStore.ValidateTarget(edited);
        using LibvirtPool redefined = Connection.DefinePool(edited.Element.ToString(SaveOptions.DisableFormatting), validate: true, name);
        if (autostart is bool value)
        {
            redefined.Autostart = value;
        }

        // libvirt applies a pool's permissions only when it builds the folder; as offline, a change applies now.
        if (edited.Permissions != current.Definition.Permissions && current.LocalPath is { } local && Directory.Exists(local))
        {
            OfflinePoolStore.ApplyPermissions(local, edited.Permissions);
        }

        return ReadPool(redefined);
    }

    public void UndefinePool(string name, bool deleteTarget)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = Connection.LookupPool(name);
        bool active = pool.GetInfo().State != (int)PoolState.Inactive;
        string? localFolder = deleteTarget && ReadPool(pool) is { LocalPath: { } folder } current && current.PoolType.HoldsFileVolumes() ? folder : null;
        if (localFolder is not null && Directory.Exists(localFolder) && Directory.EnumerateFileSystemEntries(localFolder).Any())
        {
            // libvirt would say only "Directory not empty", and an inactive pool lists no volumes.
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                ErrorIds.PoolTargetNotEmpty,
                $"The target folder '{localFolder}' of pool '{name}' is not empty; volumes are never deleted with a pool. Remove them first, or undefine without deleting the folder.",
                name);
        }

        if (deleteTarget && active && pool.ListVolumes() is { Count: > 0 } volumes)
        {
            volumes.ToList().ForEach(v => v.Dispose());
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                ErrorIds.PoolTargetNotEmpty,
                $"Pool '{name}' still has {volumes.Count} volume(s); volumes are never deleted with a pool. Remove them first, or undefine without deleting the target.",
                name);
        }

        // libvirt refuses to undefine or delete an active pool ("storage pool is still active").
        if (active)
        {
            pool.Stop();
        }

        if (deleteTarget && (localFolder is null || Directory.Exists(localFolder)))
        {
            pool.Delete();
        }

        if (pool.IsPersistent)
        {
            pool.Undefine();
        }
    }

    public StoragePool StartPool(string name, bool build)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = Connection.LookupPool(name);
        pool.Start(build ? 1u : 0u);
        return ReadPool(pool);
    }

    public StoragePool StopPool(string name)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = Connection.LookupPool(name);
        pool.Stop();
        return ReadPool(pool);
    }

    public StoragePool RefreshPool(string name)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = Connection.LookupPool(name);
        pool.Refresh();
        return ReadPool(pool);
    }

    // ---- Volumes ----

    public IReadOnlyList<VolumeReadResult> ListVolumes(string pool)
    {
        StoragePool p = GetPool(pool);
        if (UsesFileEngine(p))
        {
            return files.List(pool);
        }

        using LibvirtPool handle = Connection.LookupPool(pool);
        var results = new List<VolumeReadResult>();
        foreach (LibvirtVolume volume in handle.ListVolumes().OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            using (volume)
            {
                try
                {
                    results.Add(new VolumeReadResult(volume.Name, ReadVolume(volume, pool), null));
                }
                catch (KvmStorageException ex)
                {
                    results.Add(new VolumeReadResult(volume.Name, null, ex));
                }
            }
        }

        return results;
    }

    public StorageVolume GetVolume(string pool, string name)
    {
        VolumeNames.Validate(name);
        StoragePool p = GetPool(pool);
        if (UsesFileEngine(p))
        {
            return files.Get(pool, name);
        }

        using LibvirtPool handle = Connection.LookupPool(pool);
        using LibvirtVolume volume = handle.LookupVolume(name);
        return ReadVolume(volume, pool);
    }

    public StorageVolume GetVolumeByPath(string localPath)
    {
        if (IsLocal && (File.Exists(localPath) || Directory.Exists(localPath)))
        {
            return files.GetByPath(localPath);
        }

        LibvirtVolume volume;
        try
        {
            volume = Connection.LookupVolumeByPath(localPath);
        }
        catch (LibvirtException ex) when (IsLocal && ex.Code == LibvirtErrorCodes.NoStorageVolume)
        {
            // Neither a file here nor a volume libvirt knows (rbd, gluster): the same ImageNotFound as offline.
            return files.GetByPath(localPath);
        }

        using LibvirtVolume _ = volume;
        string? pool = ListPools().Select(r => r.Pool).FirstOrDefault(p => p?.Path is not null && System.IO.Path.GetDirectoryName(localPath) == System.IO.Path.TrimEndingDirectorySeparator(p.Path))?.Name;
        return ReadVolume(volume, pool);
    }

    public StorageVolume CreateVolume(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        VolumeNames.Validate(request.Name);
        RequireWritable($"Creating volume '{request.Name}'", request.Name);
        StoragePool pool = GetPool(request.Pool);
        RequireActive(pool);
        if (UsesFileEngine(pool))
        {
            StorageVolume created = files.Create(request, progress, cancellationToken);
            RefreshAfterWrite(pool.Name, $"The image '{created.Path}' was written");
            return created;
        }

        using LibvirtPool handle = Connection.LookupPool(pool.Name);
        var target = new XElement("target", new XElement("format", new XAttribute("type", request.Image.Format.ToQemuName())));
        var xml = new XElement(
            "volume",
            new XElement("name", request.Name),
            new XElement("capacity", new XAttribute("unit", "bytes"), request.Image.VirtualSize),
            target);
        if (request.Image.Format == ImageFormat.Qcow2)
        {
            target.Add(new XElement("compat", request.Image.Compat));
        }

        if (request.BackingPath is not null)
        {
            var backing = new XElement("backingStore", new XElement("path", request.BackingPath));
            if (request.Image.BackingFormat is { } backingFormat)
            {
                backing.Add(new XElement("format", new XAttribute("type", backingFormat.ToQemuName())));
            }

            xml.Add(backing);
        }

        // The XML is generated here from typed values; schema validation (8.10+) is not supported by every driver.
        using LibvirtVolume volume = handle.CreateVolume(xml.ToString(SaveOptions.DisableFormatting), validate: false, request.Name);
        return ReadVolume(volume, pool.Name);
    }

    public void RemoveVolume(string pool, string name, bool force)
    {
        RequireWritable($"Removing volume '{name}'", name);
        StoragePool p = GetPool(pool);
        if (UsesFileEngine(p))
        {
            files.Remove(pool, name, force);
            if (p.PoolState == PoolState.Running)
            {
                RefreshAfterWrite(pool, $"The image '{name}' was deleted");
            }

            return;
        }

        using LibvirtPool handle = Connection.LookupPool(pool);
        using LibvirtVolume volume = handle.LookupVolume(name);
        volume.Delete();
    }

    public StorageVolume ResizeVolume(string pool, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        RequireWritable($"Resizing volume '{name}'", name);
        StoragePool p = GetPool(pool);
        if (UsesFileEngine(p))
        {
            StorageVolume resized = files.Resize(pool, name, newSize, options, progress, cancellationToken);
            if (p.PoolState == PoolState.Running)
            {
                RefreshAfterWrite(pool, $"The image '{resized.Path}' was resized");
            }

            return resized;
        }

        using LibvirtPool handle = Connection.LookupPool(pool);
        using LibvirtVolume volume = handle.LookupVolume(name);
        volume.Resize(newSize, options.AllowShrink);
        return ReadVolume(volume, pool);
    }

    // ---- Domains ----

    public IReadOnlyList<DomainFileEntry> ListDomains()
    {
        var entries = new List<DomainFileEntry>();
        foreach (LibvirtDomain domain in Connection.ListDomains().OrderBy(d => d.Name, StringComparer.Ordinal))
        {
            using (domain)
            {
                try
                {
                    entries.Add(new DomainFileEntry(domain.Name, Name, ReadDomain(domain, inactive: domain.IsPersistent), null));
                }
                catch (KvmStorageException ex)
                {
                    entries.Add(new DomainFileEntry(domain.Name, Name, null, ex));
                }
            }
        }

        return entries;
    }

    public DomainDefinition GetDomain(string name)
    {
        using LibvirtDomain domain = Connection.LookupDomain(name);
        return ReadDomain(domain, inactive: domain.IsPersistent);
    }

    public DomainDefinition? GetLiveDomain(string name)
    {
        using LibvirtDomain domain = Connection.LookupDomain(name);
        return domain.IsActive ? ReadDomain(domain, inactive: false) : null;
    }

    /// <summary>Reads the persistent definition, changes it, and defines it again (libvirt validates it).</summary>
    public T EditDomain<T>(string name, Func<DomainDefinition, T> edit)
    {
        ArgumentNullException.ThrowIfNull(edit);
        DomainDefinition definition = GetDomain(name);
        T result = edit(definition);
        if (definition.Name != name)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, DomainErrorIds.DomainNameMismatch, $"An edit of '{name}' may not rename it to '{definition.Name}'.", name);
        }

        using LibvirtDomain _ = Connection.DefineDomain(definition.Element.ToString(SaveOptions.DisableFormatting), validate: true, name);
        return result;
    }

    public bool IsDomainActive(string name)
    {
        using LibvirtDomain domain = Connection.LookupDomain(name);
        return domain.IsActive;
    }

    public DomainDisk AttachDisk(string vmName, DiskSpec spec, DeviceScope scope)
    {
        ArgumentNullException.ThrowIfNull(spec);
        using LibvirtDomain domain = Connection.LookupDomain(vmName);
        DeviceScope effective = EffectiveScope(domain, scope);
        DomainDefinition? config = domain.IsPersistent ? ReadDomain(domain, inactive: true) : null;
        DomainDefinition? live = domain.IsActive ? ReadDomain(domain, inactive: false) : null;

        // Free in both definitions, whatever the scope: a -Live disk on a target the persistent definition uses
        // would clash at the next start, and the other way round.
        DiskPlacement placement = spec.Target is null ? NextFreeTarget(spec, config, live) : new DiskPlacement(spec.Target, spec.Address);
        string target = placement.Target;

        // The disk element is built by the same editor as offline, on a copy, so the same checks apply.
        DomainDefinition basis = new(new XElement((effective.HasFlag(DeviceScope.Config) ? config : live ?? config)!.Element));
        List<XElement> controllersBefore = basis.Devices?.Elements("controller").ToList() ?? [];
        new DomainDiskEditor(basis).AddDisk(WithTarget(spec, placement));
        XElement disk = basis.FindDiskElement(target)!;

        // A controller the editor added (virtio-scsi for the first SCSI disk) is attached first: left to itself,
        // libvirt would add an lsilogic one. The running VM gets it only when it has no such controller yet.
        foreach (XElement controller in basis.Devices?.Elements("controller").Where(c => !controllersBefore.Contains(c)).ToList() ?? [])
        {
            string type = (string?)controller.Attribute("type") ?? string.Empty;
            DeviceScope controllerScope = effective;
            if (live is not null && live.Controllers.Any(c => c.Type == type))
            {
                controllerScope &= ~DeviceScope.Live;
            }

            if ((controllerScope & (DeviceScope.Live | DeviceScope.Config)) != 0)
            {
                domain.AttachDevice(controller.ToString(SaveOptions.DisableFormatting), controllerScope);
            }
        }

        domain.AttachDevice(disk.ToString(SaveOptions.DisableFormatting), effective);
        return ReadBack(domain, effective, target) ?? basis.ReadDisk(disk);
    }

    public DomainDisk UpdateDisk(string vmName, string target, DiskUpdate update, DeviceScope scope) =>
        ChangeDisk(vmName, target, scope, editor => editor.UpdateDisk(target, update));

    public DomainDisk ChangeDiskMedia(string vmName, string target, string? sourcePath, string? format, DeviceScope scope) =>
        ChangeDisk(vmName, target, scope, editor => editor.ChangeMedia(target, sourcePath, format));

    public DomainDisk DetachDisk(string vmName, string target, DeviceScope scope, TimeSpan liveTimeout)
    {
        using LibvirtDomain domain = Connection.LookupDomain(vmName);
        (DeviceScope effective, DomainDefinition basis) = ScopeForDisk(domain, scope, target);
        XElement disk = basis.FindDiskElement(target)!;
        DomainDisk before = basis.ReadDisk(disk);
        domain.DetachDevice(disk.ToString(SaveOptions.DisableFormatting), effective);
        if (!effective.HasFlag(DeviceScope.Live))
        {
            return before;
        }

        // Hot-unplug is asynchronous: the guest must acknowledge it (notes §8). Poll the live XML.
        DateTime deadline = DateTime.UtcNow + liveTimeout;
        while (true)
        {
            if (!domain.IsActive || ReadDomain(domain, inactive: false).FindDiskElement(target) is null)
            {
                return before;
            }

            if (DateTime.UtcNow >= deadline)
            {
                break;
            }

            Thread.Sleep(DetachPollInterval);
        }

        string persistent = effective.HasFlag(DeviceScope.Config) ? " It was removed from the persistent definition, so it is gone after the next shutdown." : string.Empty;
        throw new KvmStorageException(
            ErrorKind.ResourceBusy,
            LibvirtErrorIds.LiveDetachPending,
            $"libvirt asked the guest of '{vmName}' to release disk '{target}', but after {liveTimeout.TotalSeconds:0.#} s the running VM still has it (the guest OS must acknowledge the unplug; one without ACPI hotplug support never does).{persistent} Check again with Get-VMDisk, or shut the VM down.",
            target);
    }

    // ---- helpers ----

    private DomainDisk ChangeDisk(string vmName, string target, DeviceScope scope, Func<DomainDiskEditor, DomainDisk> change)
    {
        using LibvirtDomain domain = Connection.LookupDomain(vmName);
        (DeviceScope effective, DomainDefinition basis) = ScopeForDisk(domain, scope, target);
        change(new DomainDiskEditor(basis));
        XElement disk = basis.FindDiskElement(target)!;
        domain.UpdateDevice(disk.ToString(SaveOptions.DisableFormatting), effective);
        return ReadBack(domain, effective, target) ?? basis.ReadDisk(disk);
    }

    /// <summary>
    /// The definitions a change of an existing disk applies to, and the one its XML is taken from. Default: wherever
    /// the disk is (a disk hot-plugged with -Live is in the running VM only; one detached with -Config is still in
    /// it). Chosen with -Live/-Config: each chosen definition must have the disk.
    /// </summary>
    private static (DeviceScope Effective, DomainDefinition Basis) ScopeForDisk(LibvirtDomain domain, DeviceScope requested, string target)
    {
        DeviceScope effective = EffectiveScope(domain, requested);
        DomainDefinition? config = effective.HasFlag(DeviceScope.Config) ? ReadDomain(domain, inactive: true) : null;
        DomainDefinition? live = effective.HasFlag(DeviceScope.Live) ? ReadDomain(domain, inactive: false) : null;
        bool inConfig = config?.FindDiskElement(target) is not null;
        bool inLive = live?.FindDiskElement(target) is not null;
        if (requested == DeviceScope.Default)
        {
            effective = (inConfig ? DeviceScope.Config : 0) | (inLive ? DeviceScope.Live : 0);
            if (effective == 0)
            {
                throw DiskNotFound(domain.Name, target, live is null ? "in its definition" : "in its persistent definition or in the running VM");
            }
        }
        else if (config is not null && !inConfig)
        {
            string hint = inLive || (!effective.HasFlag(DeviceScope.Live) && domain.IsActive && ReadDomain(domain, inactive: false).FindDiskElement(target) is not null)
                ? " It is in the running VM only: use -Live."
                : string.Empty;
            throw DiskNotFound(domain.Name, target, "in its persistent definition", hint);
        }
        else if (live is not null && !inLive)
        {
            throw DiskNotFound(domain.Name, target, "in the running VM", inConfig ? " It is in the persistent definition only: use -Config." : string.Empty);
        }

        return (effective, inConfig ? config! : live!);
    }

    private static KvmStorageException DiskNotFound(string vmName, string target, string where, string hint = "") =>
        new(ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"VM '{vmName}' has no disk '{target}' {where}.{hint}", target);

    /// <summary>Default: the persistent definition, plus the running VM when it runs (virsh's --persistent).</summary>
    private static DeviceScope EffectiveScope(LibvirtDomain domain, DeviceScope requested)
    {
        bool active = domain.IsActive;
        bool persistent = domain.IsPersistent;
        if (requested == DeviceScope.Default)
        {
            return (persistent ? DeviceScope.Config : 0) | (active ? DeviceScope.Live : 0);
        }

        if (requested.HasFlag(DeviceScope.Live) && !active)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, LibvirtErrorIds.LiveChangeUnavailable, $"VM '{domain.Name}' is not running: there is no live VM to change. Omit -Live to change its persistent definition.", domain.Name);
        }

        if (requested.HasFlag(DeviceScope.Config) && !persistent)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, LibvirtErrorIds.LiveChangeUnavailable, $"VM '{domain.Name}' is transient: it has no persistent definition to change. Use -Live.", domain.Name);
        }

        return requested;
    }

    /// <summary>The next free target (and drive address) for the disk's bus, across the persistent and the live definitions.</summary>
    private static DiskPlacement NextFreeTarget(DiskSpec spec, DomainDefinition? config, DomainDefinition? live)
    {
        string bus = spec.Bus ?? spec.Device switch
        {
            "cdrom" => "sata",
            "floppy" => "fdc",
            "lun" => "scsi",
            _ => "virtio",
        };
        return DiskTargetPlanner.Choose(bus, config, live);
    }

    private static DomainDisk? ReadBack(LibvirtDomain domain, DeviceScope effective, string target)
    {
        try
        {
            return ReadDomain(domain, inactive: effective.HasFlag(DeviceScope.Config)).FindDisk(target);
        }
        catch (KvmStorageException)
        {
            return null;
        }
    }

    private static DiskSpec WithTarget(DiskSpec s, DiskPlacement placement) => new()
    {
        SourcePath = s.SourcePath,
        Pool = s.Pool,
        Volume = s.Volume,
        AsVolumeSource = s.AsVolumeSource,
        SourceIsBlockDevice = s.SourceIsBlockDevice,
        Format = s.Format,
        Target = placement.Target,
        Address = placement.Address,
        Bus = s.Bus,
        Device = s.Device,
        Cache = s.Cache,
        Io = s.Io,
        Discard = s.Discard,
        ReadOnly = s.ReadOnly,
        Shareable = s.Shareable,
        Serial = s.Serial,
        BootOrder = s.BootOrder,
    };

    private static DomainDefinition ReadDomain(LibvirtDomain domain, bool inactive) => DomainDefinition.Parse(domain.GetXml(inactive));

    private LibvirtPool? TryLookupPool(string name)
    {
        try
        {
            return Connection.LookupPool(name);
        }
        catch (LibvirtException ex) when (ex.Code == LibvirtErrorCodes.NoStoragePool)
        {
            return null;
        }
    }

    private bool UsesFileEngine(StoragePool pool) => IsLocal && pool.PoolType.HoldsFileVolumes() && pool.LocalPath is not null;

    /// <summary>
    /// The native engine writes files itself, where libvirt's read-only check never runs: a read-only connection
    /// must refuse before anything is written, as libvirt does for its own calls.
    /// </summary>
    private void RequireWritable(string what, string target)
    {
        if (Connection.ReadOnly)
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                LibvirtErrorIds.OperationDenied,
                $"{what} needs a writable connection, but the connection to {Name} is read-only. Connect again without -ReadOnly (Connect-LibvirtHost -Uri '{Name}').",
                target);
        }
    }

    private static void RequireActive(StoragePool pool)
    {
        if (pool.PoolState != PoolState.Running)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, LibvirtErrorIds.PoolNotActive, $"Pool '{pool.Name}' is not running ({pool.State}); libvirt takes new volumes only in a running pool. Start it with Start-StoragePool.", pool.Name);
        }
    }

    /// <summary>The file is already changed: a failed refresh is reported with what was done, never left silent.</summary>
    public void RefreshAfterWrite(string pool, string done)
    {
        try
        {
            using LibvirtPool handle = Connection.LookupPool(pool);
            handle.Refresh();
        }
        catch (KvmStorageException ex)
        {
            throw new KvmStorageException(
                ErrorKind.ResourceUnavailable,
                LibvirtErrorIds.PoolRefreshFailed,
                $"{done}, but refreshing pool '{pool}' on {Name} failed, so libvirt may not list the change yet: {ex.Message} Run Update-StoragePool -Name '{pool}' to retry.",
                pool,
                ex);
        }
    }

    private StoragePool ReadPool(LibvirtPool pool)
    {
        bool persistent = pool.IsPersistent;
        string xml;
        try
        {
            xml = pool.GetXml(inactive: persistent);
        }
        catch (LibvirtException) when (persistent)
        {
            // The test driver does not support VIR_STORAGE_XML_INACTIVE (notes §10).
            xml = pool.GetXml(inactive: false);
        }

        PoolDefinition definition;
        try
        {
            definition = PoolDefinition.FromXml(LibvirtXml.Parse(xml), pool.Name);
        }
        catch (XmlException ex)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, ErrorIds.InvalidPoolDefinition, $"libvirt returned malformed XML for pool '{pool.Name}': {ex.Message}", pool.Name, ex);
        }

        LibvirtPoolInfo info = pool.GetInfo();
        var state = (PoolState)Math.Clamp(info.State, 0, (int)PoolState.Inaccessible);
        int? volumeCount = null;
        if (state == PoolState.Running)
        {
            IReadOnlyList<LibvirtVolume> volumes = pool.ListVolumes();
            volumeCount = volumes.Count;
            foreach (LibvirtVolume v in volumes)
            {
                v.Dispose();
            }
        }

        string? target = definition.TargetPath;
        return new StoragePool
        {
            Name = pool.Name,
            Uuid = definition.Uuid ?? Guid.Empty,
            PoolType = definition.Type,
            PoolState = state,
            Autostart = persistent && pool.Autostart,
            Persistent = persistent,
            Path = target,
            LocalPath = IsLocal && target is not null && target.StartsWith('/') ? Paths.Resolve(target) : null,
            Source = definition.Source,
            Permissions = definition.Permissions,
            Capacity = info.Capacity,
            Allocation = info.Allocation,
            Available = info.Available,
            VolumeCount = volumeCount,
            DefinitionPath = null,
            HostName = Name,
            Definition = definition,
        };
    }

    /// <summary>A volume as libvirt describes it (used where the image file cannot be read from this machine).</summary>
    private StorageVolume ReadVolume(LibvirtVolume volume, string? pool)
    {
        XElement xml;
        try
        {
            xml = LibvirtXml.Parse(volume.GetXml());
        }
        catch (XmlException ex)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, VolumeErrorIds.VolumeNotFound, $"libvirt returned malformed XML for volume '{volume.Name}': {ex.Message}", volume.Name, ex);
        }

        string path = (string?)xml.Element("target")?.Element("path") ?? volume.GetPath();
        string? formatName = (string?)xml.Element("target")?.Element("format")?.Attribute("type");
        ImageFormat format = ImageFormats.TryParse(formatName, out ImageFormat f) ? f : ImageFormat.Raw;
        ulong capacity = Bytes(xml.Element("capacity"));
        ulong allocation = Bytes(xml.Element("allocation"));
        ulong physical = xml.Element("physical") is { } p ? Bytes(p) : allocation;
        XElement? backing = xml.Element("backingStore");
        string? backingPath = (string?)backing?.Element("path");
        var info = new ImageInfo
        {
            Path = path,
            ImageFormat = format,
            VirtualSize = capacity,
            ActualSize = allocation,
            FileLength = physical,
            BackingFile = backingPath,
            FullBackingFile = backingPath,
            BackingFormat = (string?)backing?.Element("format")?.Attribute("type"),
        };
        return new StorageVolume
        {
            Name = volume.Name,
            Pool = pool,
            Path = path,
            LocalPath = path,
            ImageFormat = format,
            Capacity = capacity,
            Allocation = allocation,
            FileLength = physical,
            BackingFile = backingPath,
            BackingPath = backingPath,
            BackingFormat = info.BackingFormat,
            Chain = backingPath is null ? [path] : [path, backingPath],
            Compat = (string?)xml.Element("target")?.Element("compat"),
            Image = info,
            HostName = Name,
        };
    }

    private static ulong Bytes(XElement? element)
    {
        if (element is null || !ulong.TryParse(element.Value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out ulong value))
        {
            return 0;
        }

        // libvirt reports volumes in bytes; honour a unit anyway.
        return ((string?)element.Attribute("unit")) switch
        {
            null or "bytes" or "B" or "b" => value,
            "KiB" or "K" or "k" => value * 1024,
            "MiB" or "M" => value * 1024 * 1024,
            "GiB" or "G" => value * 1024 * 1024 * 1024,
            _ => value,
        };
    }
}
