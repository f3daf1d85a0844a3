using System.Xml.Linq;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Libvirt;

namespace KvmStorage.Core.Backends.Live;

/// <summary>
/// The live backend's domains: definitions read and redefined through libvirt, and disks changed with libvirt's device
/// calls in the persistent definition, the running VM, or both. Each disk element is built and checked by the same
/// <see cref="DomainDiskEditor"/> as offline, on a copy, before libvirt sees it.
/// </summary>
internal sealed class LiveDomains(LiveHost host)
{
    private static readonly TimeSpan DetachPollInterval = TimeSpan.FromMilliseconds(200);

    public IReadOnlyList<DomainFileEntry> List()
    {
        var entries = new List<DomainFileEntry>();
        foreach (LibvirtDomain domain in host.Connection.ListDomains().OrderBy(d => d.Name, StringComparer.Ordinal))
        {
            using (domain)
            {
                try
                {
                    entries.Add(new DomainFileEntry(domain.Name, host.Name, Read(domain, inactive: domain.IsPersistent), null));
                }
                catch (KvmStorageException ex)
                {
                    entries.Add(new DomainFileEntry(domain.Name, host.Name, null, LibvirtErrorMapping.Translate(ex)));
                }
            }
        }

        return entries;
    }

    public DomainDefinition Get(string name)
    {
        using LibvirtDomain domain = host.Connection.LookupDomain(name);
        return Read(domain, inactive: domain.IsPersistent);
    }

    public DomainDefinition? GetLive(string name)
    {
        using LibvirtDomain domain = host.Connection.LookupDomain(name);
        return domain.IsActive ? Read(domain, inactive: false) : null;
    }

    /// <summary>Reads the persistent definition, changes it, and defines it again (libvirt validates it).</summary>
    public T Edit<T>(string name, Func<DomainDefinition, T> edit)
    {
        ArgumentNullException.ThrowIfNull(edit);
        DomainDefinition definition = Get(name);
        T result = edit(definition);
        if (definition.Name != name)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, DomainErrorIds.DomainNameMismatch, $"An edit of '{name}' may not rename it to '{definition.Name}'.", name);
        }

        using LibvirtDomain _ = host.Connection.DefineDomain(definition.Element.ToString(SaveOptions.DisableFormatting), validate: true, name);
        return result;
    }

    public bool IsActive(string name)
    {
        using LibvirtDomain domain = host.Connection.LookupDomain(name);
        return domain.IsActive;
    }

    public DomainDisk AttachDisk(string vmName, DiskSpec spec, DeviceScope scope)
    {
        ArgumentNullException.ThrowIfNull(spec);
        using LibvirtDomain domain = host.Connection.LookupDomain(vmName);
        DeviceScope effective = EffectiveScope(domain, scope);
        DomainDefinition? config = domain.IsPersistent ? Read(domain, inactive: true) : null;
        DomainDefinition? live = domain.IsActive ? Read(domain, inactive: false) : null;

        // Free in both definitions, whatever the scope: a -Live disk on a target the persistent definition uses
        // would clash at the next start, and the other way round.
        DiskPlacement placement = spec.Target is null ? DiskTargetPlanner.Choose(spec.BusOrDefault, config, live) : new DiskPlacement(spec.Target, spec.Address);
        string target = placement.Target;

        // The disk element is built by the same editor as offline, on a copy, so the same checks apply.
        DomainDefinition basis = new(new XElement((effective.HasFlag(DeviceScope.Config) ? config : live ?? config)!.Element));
        List<XElement> controllersBefore = basis.Devices?.Elements("controller").ToList() ?? [];
        new DomainDiskEditor(basis).AddDisk(spec with { Target = placement.Target, Address = placement.Address });
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
                domain.AttachDevice(controller.ToString(SaveOptions.DisableFormatting), Impact(controllerScope));
            }
        }

        domain.AttachDevice(disk.ToString(SaveOptions.DisableFormatting), Impact(effective));
        return ReadBack(domain, effective, target) ?? basis.ReadDisk(disk);
    }

    public DomainDisk UpdateDisk(string vmName, string target, DiskUpdate update, DeviceScope scope) =>
        ChangeDisk(vmName, target, scope, editor => editor.UpdateDisk(target, update));

    public DomainDisk ChangeDiskMedia(string vmName, string target, string? sourcePath, string? format, DeviceScope scope) =>
        ChangeDisk(vmName, target, scope, editor => editor.ChangeMedia(target, sourcePath, format));

    public DomainDisk DetachDisk(string vmName, string target, DeviceScope scope, TimeSpan liveTimeout)
    {
        using LibvirtDomain domain = host.Connection.LookupDomain(vmName);
        (DeviceScope effective, DomainDefinition basis) = ScopeForDisk(domain, scope, target);
        XElement disk = basis.FindDiskElement(target)!;
        DomainDisk before = basis.ReadDisk(disk);
        domain.DetachDevice(disk.ToString(SaveOptions.DisableFormatting), Impact(effective));
        if (!effective.HasFlag(DeviceScope.Live))
        {
            return before;
        }

        // Hot-unplug is asynchronous: libvirt asks the guest to release the disk (an ACPI hotplug event) and returns; the
        // disk leaves the live XML only once the guest acknowledges it. Poll the live XML.
        DateTime deadline = DateTime.UtcNow + liveTimeout;
        while (true)
        {
            if (!domain.IsActive || Read(domain, inactive: false).FindDiskElement(target) is null)
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
            BackendErrorIds.LiveDetachPending,
            $"libvirt asked the guest of '{vmName}' to release disk '{target}', but after {liveTimeout.TotalSeconds:0.#} s the running VM still has it (the guest OS must acknowledge the unplug; one without ACPI hotplug support never does).{persistent} Check again with Get-VMDisk, or shut the VM down.",
            target);
    }

    private DomainDisk ChangeDisk(string vmName, string target, DeviceScope scope, Func<DomainDiskEditor, DomainDisk> change)
    {
        using LibvirtDomain domain = host.Connection.LookupDomain(vmName);
        (DeviceScope effective, DomainDefinition basis) = ScopeForDisk(domain, scope, target);
        change(new DomainDiskEditor(basis));
        XElement disk = basis.FindDiskElement(target)!;
        domain.UpdateDevice(disk.ToString(SaveOptions.DisableFormatting), Impact(effective));
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
        DomainDefinition? config = effective.HasFlag(DeviceScope.Config) ? Read(domain, inactive: true) : null;
        DomainDefinition? live = effective.HasFlag(DeviceScope.Live) ? Read(domain, inactive: false) : null;
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
            string hint = inLive || (!effective.HasFlag(DeviceScope.Live) && domain.IsActive && Read(domain, inactive: false).FindDiskElement(target) is not null)
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
            throw new KvmStorageException(ErrorKind.InvalidOperation, BackendErrorIds.LiveChangeUnavailable, $"VM '{domain.Name}' is not running: there is no live VM to change. Omit -Live to change its persistent definition.", domain.Name);
        }

        if (requested.HasFlag(DeviceScope.Config) && !persistent)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, BackendErrorIds.LiveChangeUnavailable, $"VM '{domain.Name}' is transient: it has no persistent definition to change. Use -Live.", domain.Name);
        }

        return requested;
    }

    private static DomainDisk? ReadBack(LibvirtDomain domain, DeviceScope effective, string target)
    {
        try
        {
            return Read(domain, inactive: effective.HasFlag(DeviceScope.Config)).FindDisk(target);
        }
        catch (KvmStorageException)
        {
            return null;
        }
    }

    private static DomainDefinition Read(LibvirtDomain domain, bool inactive) => DomainDefinition.Parse(domain.GetXml(inactive));

    /// <summary>The module's scope as libvirt's flags (the live backend always passes a resolved, non-default scope).</summary>
    private static LibvirtModificationImpact Impact(DeviceScope scope) =>
        (scope.HasFlag(DeviceScope.Live) ? LibvirtModificationImpact.Live : LibvirtModificationImpact.Current)
        | (scope.HasFlag(DeviceScope.Config) ? LibvirtModificationImpact.Config : LibvirtModificationImpact.Current);
}
