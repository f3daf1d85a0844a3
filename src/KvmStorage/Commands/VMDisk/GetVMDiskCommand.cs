using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>Get-VMDisk: lists the disks (and cdrom drives) of VMs from their definitions, and of running VMs from the live one too.</summary>
[Cmdlet(VerbsCommon.Get, "VMDisk", DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Domains.VMDisk))]
public sealed class GetVMDiskCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ByInput = "ByInput";

    /// <summary>VM names; wildcards allowed. All VMs when omitted.</summary>
    [Parameter(Position = 0, ParameterSetName = ByName)]
    [Alias("Name")]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string[]? VMName { get; set; }

    /// <summary>Target names such as vda or sd*; wildcards allowed.</summary>
    [Parameter(Position = 1)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string[]? Target { get; set; }

    /// <summary>
    /// Objects from the pipeline, each naming what it is: a VM disk (that disk, read again), a volume (the disks that
    /// use it), a string (a VM name), or a record with VMName (or Name) and optionally Target properties. A pool names
    /// no disk and is refused.
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = ByInput)]
    public PSObject[] InputObject { get; set; } = [];

    protected override void ProcessRecord()
    {
        if (ParameterSetName == ByName)
        {
            RunForItem(KvmHost.Name, () => WriteDisks(VMName ?? ["*"], Target, null));
            return;
        }

        foreach (PSObject input in InputObject)
        {
            RunForItem(input, () =>
            {
                switch (input.BaseObject)
                {
                    case Core.Domains.VMDisk disk:
                        WriteDisks([disk.VMName], [disk.Target], null);
                        break;
                    case Core.Volumes.StorageVolume volume:
                        StorageVolumeUsers(volume);
                        break;
                    case string name:
                        WriteDisks([name], Target, null);
                        break;
                    case Core.Pools.StoragePool pool:
                        throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.InputNotRecognized, $"Pool '{pool.Name}' names no VM disk; pipe its volumes (Get-Volume -Pool {pool.Name}) to find the disks that use them.", pool.Name);
                    default:
                        string? vm = new[] { input.Properties["VMName"]?.Value, input.Properties["Name"]?.Value }.Select(v => v?.ToString()).FirstOrDefault(v => !string.IsNullOrEmpty(v))
                            ?? throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.InputNotRecognized, $"The input object ({input.BaseObject.GetType().Name}) names no VM (no VMName or Name property).", input.BaseObject);
                        string? target = input.Properties["Target"]?.Value?.ToString();
                        WriteDisks([vm], target is { Length: > 0 } ? [target] : Target, null);
                        break;
                }
            });
        }
    }

    /// <summary>The disks whose image is <paramref name="volume"/>, in the VMs that use it.</summary>
    private void StorageVolumeUsers(Core.Volumes.StorageVolume volume)
    {
        Core.Volumes.StorageVolume fresh = Volumes.Locator.Get(Core.Access.VolumeSpec.Of(volume));
        if (fresh.AttachedTo.Count > 0)
        {
            WriteDisks([.. fresh.AttachedTo], Target, d => d.Source == fresh.Path);
        }
    }

    private void WriteDisks(IEnumerable<string> vmNames, string[]? targetNames, Func<Core.Domains.VMDisk, bool>? filter)
    {
        var attachments = new DiskAttachments(KvmHost);
        var targets = targetNames?.Select(t => new WildcardPattern(t, WildcardOptions.IgnoreCase)).ToList();
        IReadOnlyList<DomainFileEntry> domains = KvmHost.ListDomains();
        var seenTargets = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var readVMs = new List<string>();
        foreach (string name in vmNames)
        {
            var pattern = new WildcardPattern(name, WildcardOptions.IgnoreCase);
            var matches = domains.Where(d => pattern.IsMatch(d.Name)).ToList();
            if (matches.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(name))
            {
                RunForItem(name, () => KvmHost.GetDomain(name));
                continue;
            }

            foreach (DomainFileEntry entry in matches)
            {
                if (entry.Error is not null)
                {
                    WriteError(entry.Error, entry.Path);
                    continue;
                }

                // A running VM's disks are merged in (Scope Persistent, Live or Both); a VM that vanished
                // meanwhile is an error of its own.
                RunForItem(entry.Name, () =>
                {
                    foreach (Core.Domains.VMDisk disk in attachments.GetDisks(entry.Definition!, KvmHost.GetLiveDomain(entry.Name)))
                    {
                        if ((targets is null || targets.Exists(t => t.IsMatch(disk.Target))) && (filter is null || filter(disk)))
                        {
                            seenTargets.Add(disk.Target);
                            WriteObject(disk);
                        }
                    }

                    readVMs.Add(entry.Name);
                });
            }
        }

        // As on Get-Volume and Get-StoragePool: a literal target no VM read has is an error; a pattern may match nothing.
        if (readVMs.Count == 0 || filter is not null)
        {
            return;
        }

        foreach (string missing in targetNames?.Where(t => !WildcardPattern.ContainsWildcardCharacters(t) && !seenTargets.Contains(t)) ?? [])
        {
            string where = readVMs.Count == 1 ? $"VM '{readVMs[0]}' has" : $"None of the VMs {string.Join(", ", readVMs.Select(v => $"'{v}'"))} has";
            WriteError(new KvmStorageException(ErrorKind.NotFound, Core.Domains.DomainErrorIds.DiskNotFound, $"{where} no disk '{missing}'.", missing), missing);
        }
    }
}
