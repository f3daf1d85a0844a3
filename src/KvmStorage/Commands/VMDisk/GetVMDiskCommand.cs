using System.Management.Automation;
using KvmStorage.Core.Domains;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>Get-VMDisk: lists the disks (and cdrom drives) of VMs from their definitions, and of running VMs from the live one too.</summary>
[Cmdlet(VerbsCommon.Get, "VMDisk")]
[OutputType(typeof(Core.Domains.VMDisk))]
public sealed class GetVMDiskCommand : KvmCmdlet
{
    /// <summary>VM names; wildcards allowed. All VMs when omitted.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string[]? VMName { get; set; }

    /// <summary>Target names such as vda or sd*; wildcards allowed.</summary>
    [Parameter(Position = 1)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[]? Target { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(KvmHost.Name, () =>
        {
            var attachments = new DiskAttachments(KvmHost);
            var targets = Target?.Select(t => new WildcardPattern(t, WildcardOptions.IgnoreCase)).ToList();
            IReadOnlyList<DomainFileEntry> domains = KvmHost.ListDomains();
            foreach (string name in VMName ?? ["*"])
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
                        WriteError(ErrorRecords.From(entry.Error, entry.Path));
                        continue;
                    }

                    // A running VM's disks are merged in (Scope Persistent, Live or Both); a VM that vanished
                    // meanwhile is an error of its own.
                    RunForItem(entry.Name, () =>
                    {
                        foreach (Core.Domains.VMDisk disk in attachments.GetDisks(entry.Definition!, KvmHost.GetLiveDomain(entry.Name)))
                        {
                            if (targets is null || targets.Exists(t => t.IsMatch(disk.Target)))
                            {
                                WriteObject(disk);
                            }
                        }
                    });
                }
            }
        });
    }
}
