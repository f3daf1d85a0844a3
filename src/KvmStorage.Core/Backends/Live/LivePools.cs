using System.Xml;
using System.Xml.Linq;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Xml;

namespace KvmStorage.Core.Backends.Live;

/// <summary>
/// The live backend's pools: libvirt's pool calls, with the refusals the offline backend makes (<see cref="PoolTargetRules"/>)
/// made first, so both backends refuse alike and before libvirt's less precise messages.
/// </summary>
internal sealed class LivePools(LiveHost host)
{

    public IReadOnlyList<PoolReadResult> List()
    {
        var results = new List<PoolReadResult>();
        foreach (LibvirtPool pool in host.Connection.ListPools().OrderBy(p => p.Name, StringComparer.Ordinal))
        {
            using (pool)
            {
                try
                {
                    results.Add(new PoolReadResult(pool.Name, Read(pool), null));
                }
                catch (KvmStorageException ex)
                {
                    results.Add(new PoolReadResult(pool.Name, null, LibvirtErrorMapping.Translate(ex)));
                }
            }
        }

        return results;
    }

    public StoragePool Get(string name)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = host.Connection.LookupPool(name);
        return Read(pool);
    }

    public StoragePool Define(PoolDefinition definition, PoolDefineOptions options)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(options);
        PoolNames.Validate(definition.Name);
        if (TryLookup(definition.Name) is { } existing)
        {
            existing.Dispose();
            throw new KvmStorageException(ErrorKind.AlreadyExists, PoolErrorIds.PoolExists, $"A pool named '{definition.Name}' already exists on {host.Name}.", definition.Name);
        }

        // The same refusals as offline, before libvirt sees the XML: its own are less precise (a relative path is
        // "XML error", a path with '..' is accepted, a taken target is "operation failed").
        PoolTargetRules.Validate(definition);
        PoolTargetRules.CheckConflicts(definition, List().Select(r => r.Pool).OfType<StoragePool>());

        using LibvirtPool pool = host.Connection.DefinePool(definition.Element.ToString(SaveOptions.DisableFormatting), validate: true, definition.Name);
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

        return Read(pool);
    }

    public StoragePool Update(string name, Action<PoolDefinition> change, bool? autostart)
    {
        ArgumentNullException.ThrowIfNull(change);
        PoolNames.Validate(name);
        using LibvirtPool pool = host.Connection.LookupPool(name);
        StoragePool current = Read(pool);
        PoolDefinition edited = current.Redefinition(change);
        using LibvirtPool redefined = host.Connection.DefinePool(edited.Element.ToString(SaveOptions.DisableFormatting), validate: true, name);
        if (autostart is bool value)
        {
            redefined.Autostart = value;
        }

        // libvirt applies a pool's permissions only when it builds the folder; as offline, a change applies now.
        if (edited.Permissions != current.Definition.Permissions && current.LocalPath is { } local && Directory.Exists(local))
        {
            PoolTargetRules.ApplyPermissions(local, edited.Permissions);
        }

        return Read(redefined);
    }

    public void Undefine(string name, bool deleteTarget)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = host.Connection.LookupPool(name);
        bool active = pool.GetInfo().State != (int)PoolState.Inactive;
        string? localFolder = deleteTarget && Read(pool) is { LocalPath: { } folder } current && current.PoolType.HoldsFileVolumes() ? folder : null;
        if (localFolder is not null && Directory.Exists(localFolder) && Directory.EnumerateFileSystemEntries(localFolder).Any())
        {
            // libvirt would say only "Directory not empty", and an inactive pool lists no volumes.
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                PoolErrorIds.PoolTargetNotEmpty,
                $"The target folder '{localFolder}' of pool '{name}' is not empty; volumes are never deleted with a pool. Remove them first, or undefine without deleting the folder.",
                name);
        }

        if (deleteTarget && active && pool.ListVolumes() is { Count: > 0 } volumes)
        {
            volumes.ToList().ForEach(v => v.Dispose());
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                PoolErrorIds.PoolTargetNotEmpty,
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

    public StoragePool Start(string name, bool build)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = host.Connection.LookupPool(name);
        pool.Start(build ? 1u : 0u);
        return Read(pool);
    }

    public StoragePool Stop(string name)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = host.Connection.LookupPool(name);
        pool.Stop();
        return Read(pool);
    }

    public StoragePool Refresh(string name)
    {
        PoolNames.Validate(name);
        using LibvirtPool pool = host.Connection.LookupPool(name);
        pool.Refresh();
        return Read(pool);
    }

    /// <summary>A pool as libvirt describes it: its definition, state and space.</summary>
    public StoragePool Read(LibvirtPool pool)
    {
        bool persistent = pool.IsPersistent;
        string xml;
        try
        {
            xml = pool.GetXml(inactive: persistent);
        }
        catch (LibvirtException) when (persistent)
        {
            // libvirt's test driver (test:///default) refuses VIR_STORAGE_XML_INACTIVE: its pools have one definition.
            xml = pool.GetXml(inactive: false);
        }

        PoolDefinition definition;
        try
        {
            definition = PoolDefinition.FromXml(LibvirtXml.Parse(xml), pool.Name);
        }
        catch (XmlException ex)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, PoolErrorIds.InvalidPoolDefinition, $"libvirt returned malformed XML for pool '{pool.Name}': {ex.Message}", pool.Name, ex);
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
            LocalPath = host.IsLocal && target is not null && target.StartsWith('/') ? host.Paths.Resolve(target) : null,
            Source = definition.Source,
            Permissions = definition.Permissions,
            Capacity = info.Capacity,
            Allocation = info.Allocation,
            Available = info.Available,
            VolumeCount = volumeCount,
            DefinitionPath = null,
            HostName = host.Name,
            Definition = definition,
        };
    }

    private LibvirtPool? TryLookup(string name)
    {
        try
        {
            return host.Connection.LookupPool(name);
        }
        catch (LibvirtException ex) when (ex.Code == LibvirtErrorCodes.NoStoragePool)
        {
            return null;
        }
    }
}
